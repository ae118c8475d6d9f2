"""Convolutional Block Attention Module (Woo et al., arXiv 1807.06521).

Channel attention (Eq. 2): M_c = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))),
one MLP C -> C/r -> C with biases shared by both descriptors. Spatial
attention (Eq. 3): M_s = sigmoid(BN(conv_kxk([max_c(F'); mean_c(F')]))),
2 -> 1 channels, k = 7, no conv bias. Two details follow the official code
(Jongchan/attention-module, cbam.py), so its checkpoints load unchanged and
train the same: the pooled maps are stacked max first (its ChannelPool; the
paper's Eq. 3 writes [AvgPool; MaxPool]), and the spatial BN has momentum
0.01 (PyTorch's convention: 1 % of each batch's statistics enters the
running average; PyTorch's default is 0.1). Applied in sequence (Eq. 1):
F' = M_c * F, F'' = M_s * F'.
In training the module is computed one of two equal ways, whichever is
measured faster for the shape (:func:`nas.kernels.choice.run_fastest`): eagerly with
the kernels ``_pool.py`` and ``_broadcast.py`` choose, or as one graph
compiled by inductor (:class:`nas.kernels.compiled.CompiledFormulation`), which fuses
the chain of memory-bound passes over the map (pools, products, channel max
and mean, and their backward) that dominates the module's time on CPU.
Parameters: 2 C^2 / r + C / r + C + 2 k^2 + 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.broadcast import times_map
from ..kernels.choice import run_fastest
from ..kernels.compiled import CompiledFormulation, compiled_worthwhile
from ..kernels.conv import ROW_PRODUCT_MAX_WIDTH, conv2d, maps_to_one_by_row_products
from ..kernels.pool import channel_max_mean, global_avg_pool, global_max_pool
from ._base import AttentionModule, PaperPlacement
from ._checks import check_choice, check_int

_BN_EPS = 1e-5


def _plain(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, conv_w: Tensor,
           bn_w: Tensor, bn_b: Tensor) -> tuple[Tensor, Tensor]:
    """CBAM in training, as written in the module docstring, in plain torch
    ops (the graph inductor compiles): the output and the spatial conv's
    output, whose batch statistics the spatial BN normalises with (the
    caller updates the running statistics from it)."""
    n, c = x.shape[:2]
    pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))])
    hidden = F.relu(F.linear(pooled, w1, b1))
    avg, top = F.linear(hidden, w2, b2).view(2, n, c, 1, 1)
    # the channel-gated map in fp32, and the channel max taken on it: inductor
    # keeps bf16 intermediates in fp32 anyway, and amax's backward finds the
    # max by comparing each value with it, so value and max must be rounded
    # alike. With the max rounded to bf16 and the product recomputed
    # unrounded for the backward, no value matched and the gradient was NaN
    # (torch 2.14). Max with indices avoided that but recomputed an argmax in
    # the backward, ~15 % of the module's time here (AMD EPYC, bf16). Ties
    # split the gradient evenly, as the eager path's channel max does
    gated = x.float() * (avg + top).sigmoid().to(x.dtype).float()
    planes = [gated.amax(1), gated.mean(1)]
    x = gated.to(x.dtype)
    if x.shape[-1] <= ROW_PRODUCT_MAX_WIDTH:
        spatial = maps_to_one_by_row_products(planes, conv_w)
    else:
        spatial = F.conv2d(torch.stack(planes, 1), conv_w, padding=conv_w.shape[-1] // 2)
    gate = F.batch_norm(spatial, None, None, bn_w, bn_b, True, 0.0, _BN_EPS).sigmoid()
    return x * gate.to(x.dtype), spatial


_COMPILED = CompiledFormulation(_plain)


def _output_only(fn, found: list[Tensor]):
    """``fn`` (returning the output and the spatial conv's output) as a
    formulation for :func:`nas.kernels.choice.run_fastest`, which times and checks
    one output: the spatial map of the last call is kept in ``found``."""
    def formulation(*tensors: Tensor) -> Tensor:
        out, spatial = fn(*tensors)
        found[:] = [spatial]
        return out
    formulation.compiles = getattr(fn, "compiles", False)
    return formulation


class CBAM(AttentionModule):
    kind = "gate"
    paper_placement = PaperPlacement(backbone="resnet50", stride_on="1x1", position="standard")

    @classmethod
    def upgrade_state_format_1(cls, name: str, state: dict) -> bool:
        """Format 1 stacked the pooled maps [mean, max], the paper's order;
        they are [max, mean] now: the spatial conv's two input maps swap,
        which converts the weights exactly."""
        key = f"{name}.spatial.weight"
        state[key] = state[key].flip(1)
        return True

    def __init__(self, channels: int, *, r: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        check_int("cbam", "r", r, 1, channels)
        check_choice("cbam", "spatial_kernel", spatial_kernel, (3, 5, 7))
        hidden = channels // r
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1, eps=_BN_EPS, momentum=0.01)

    def _eager(self, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, conv_w: Tensor,
               bn_w: Tensor, bn_b: Tensor, batch_statistics: bool = False) -> tuple[Tensor, Tensor]:
        """The module with the kernels chosen op by op. ``batch_statistics``:
        as :func:`_plain`, the spatial BN normalising with the batch's
        statistics and its running statistics left to the caller; otherwise
        the BN module itself, in whatever mode it is in."""
        n, c = x.shape[:2]
        # both descriptors through the shared MLP in one pass: the 1x1 convs
        # as matrix products on n x C rows (oneDNN's conv on 1x1 maps costs
        # ~3x a linear layer here)
        pooled = torch.cat([global_avg_pool(x).view(n, c), global_max_pool(x).view(n, c)])
        hidden = F.relu(F.linear(pooled, w1, b1))
        avg, top = F.linear(hidden, w2, b2).view(2, n, c, 1, 1)
        x = x * (avg + top).sigmoid()
        # the 2 -> 1 channel conv through the measured choice, which may run
        # it in fp32 under autocast; the gate goes back to x's dtype so the
        # product, and the module's output, stay in it
        spatial = conv2d(channel_max_mean(x), self.spatial, conv_w)
        if batch_statistics:
            gate = F.batch_norm(spatial, None, None, bn_w, bn_b, True, 0.0, self.spatial_bn.eps)
        else:
            gate = self.spatial_bn(spatial)
        return times_map(x, gate.sigmoid().to(x.dtype)), spatial

    def _weights(self) -> tuple[Tensor, ...]:
        """The tensors both formulations take after the input (the MLP's 1x1
        convs as matrices: the weights stay conv-shaped, so the official
        checkpoints load unchanged)."""
        return (self.fc1.weight.flatten(1), self.fc1.bias, self.fc2.weight.flatten(1), self.fc2.bias,
                self.spatial.weight, self.spatial_bn.weight, self.spatial_bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        weights = self._weights()
        if self.spatial_bn.training and compiled_worthwhile("cbam", (x, *weights)):
            found: list[Tensor] = []
            # the check against fp32 (nas.kernels.choice) bounds the output's and the
            # input gradient's error; the weights' gradients need only be
            # finite: in bf16 they stray up to 0.5 from fp32 in both
            # formulations (resnet20's CBAM, batch 128: the MLP's one hidden
            # unit at r 16, the spatial conv's weight behind the spatial BN's
            # nearly cancelling backward), where a broken kernel gives NaN
            eager = _output_only(lambda *tensors: self._eager(*tensors, batch_statistics=True), found)
            out = run_fastest("cbam", {"eager": eager, "compiled": _output_only(_COMPILED, found)},
                              (x, *weights), try_fp32=False, bounded=1)
            if self.spatial_bn.track_running_stats:
                self._update_running_stats(found[0])
            return out
        return self._eager(x, *weights)[0]

    @torch.no_grad()
    def _update_running_stats(self, spatial: Tensor) -> None:
        """What ``nn.BatchNorm2d`` does to its running statistics in training,
        done here because the formulations normalise with batch statistics
        only (a compiled graph that updated them would update them once per
        run when the formulations are timed)."""
        bn = self.spatial_bn
        var, mean = torch.var_mean(spatial.float(), dim=(0, 2, 3), correction=1)
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.lerp_(mean, momentum)
        bn.running_var.lerp_(var, momentum)
