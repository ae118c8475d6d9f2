"""Global average pooling whose backward stays fast on channels_last tensors.

Every attention module here squeezes a feature map with a global average
pool. PyTorch's ``x.mean((2, 3))`` is correct but, on CPU, slow twice over
for channels_last bf16 training: the forward mean takes a slow reduction
path (about 5x a plain ``sum``), and its backward hands autograd a
stride-0 expanded gradient, whose accumulation into the channels_last
gradient of ``x`` (``x`` is also multiplied by the gate) runs about 6x
slower than adding two channels_last tensors. Measured on this project's
2-core Xeon, N=256, C=16, 32x32, bf16: forward 0.97 -> 0.19 ms, gradient
accumulation 4.7 -> 0.9 ms. :func:`global_avg_pool` sums instead, and its
backward writes the broadcast gradient out in ``x``'s own memory layout.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from .choice import run_fastest
from .conv import in_layout_of


class _GlobalAvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ctx.shape, ctx.scale = x.shape, 1.0 / (h * w)
        ctx.channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous()
        return x.sum((-2, -1), keepdim=True) * ctx.scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        out = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=fmt)
        return out.copy_((grad * ctx.scale).expand(ctx.shape))


def global_avg_pool(x: Tensor) -> Tensor:
    """Mean over the last two (spatial) dims, kept as N x C x 1 x 1."""
    return _GlobalAvgPool.apply(x)


# --------------------------------------------------------------------------- max pools
#
# CBAM squeezes with max as well as mean: over the map (channel attention)
# and over the channels (spatial attention). On CPU both of PyTorch's
# ``amax`` paths fall off cliffs at the shapes of a CIFAR net in
# channels_last: measured on a 2-core AMD EPYC (AVX2), batch 64, one thread,
# ``amax((2, 3))`` of a 16-channel 32x32 map takes 3.3 ms where the same
# number of elements with 32 channels takes 0.05 ms and
# ``adaptive_max_pool2d`` 0.36 ms; in bf16 ``amax(1)`` takes 1.2 ms at 32
# channels where a halving tree of ``maximum`` takes 0.4 ms. Autograd's
# backward of ``amax`` counts the ties of a bool mask in int64 (a full-size
# conversion pass, ~5 ms at that shape). The forwards below choose by
# measurement (:func:`nas.kernels.choice.run_fastest`; every choice returns the same
# values, a max is exact) and the backward is autograd's formula for
# ``amax`` (the gradient split evenly over ties), with the ties counted in
# the gradient's dtype and the result in the input's layout.


def _layout(x: Tensor) -> torch.memory_format:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def _halving_max(x: Tensor) -> Tensor:
    """Max over dim 1 as a tree of elementwise maxima (exact)."""
    while x.shape[1] > 1:
        half = x.shape[1] // 2
        top = torch.maximum(x[:, :half], x[:, half:2 * half])
        x = top if x.shape[1] % 2 == 0 else torch.cat([top, x[:, 2 * half:]], 1)
    return x


_SPATIAL_MAX = {"amax": lambda x: x.amax((2, 3), keepdim=True),
                "adaptive": lambda x: F.adaptive_max_pool2d(x, 1)}
_CHANNEL_MAX = {"amax": lambda x: x.amax(1, keepdim=True), "halving": _halving_max}


def written_out(t: Tensor, like: Tensor) -> Tensor:
    """``t`` broadcast to ``like``'s shape and copied out in its layout, so
    that the op that reads it broadcasts nothing (see ``_broadcast.py``)."""
    return in_layout_of(t.expand_as(like), like)


def _masked(dims, x: Tensor, result: Tensor, grad: Tensor, also: Tensor | None = None) -> Tensor:
    mask = (x == result).to(grad.dtype)  # elementwise on x: in x's layout
    mask.mul_(grad / mask.sum(dims, keepdim=True))
    return mask if also is None else mask.add_(also)


def _selected(dims, x: Tensor, result: Tensor, grad: Tensor, also: Tensor | None = None) -> Tensor:
    ties = x == written_out(result, x)
    share = grad / ties.sum(dims, keepdim=True)
    if also is None:
        return torch.where(ties, written_out(share, x), torch.zeros((), dtype=grad.dtype, device=grad.device))
    return torch.where(ties, written_out(share + also, x), written_out(also, x))


def _split_evenly(x: Tensor, result: Tensor, grad: Tensor, dims, also: Tensor | None = None) -> Tensor:
    """Autograd's gradient of ``x.amax(dims, keepdim=True)``: ``grad`` shared
    evenly by the positions equal to the max, plus ``also`` (a gradient for
    every position, broadcast; e.g. a mean's). Two formulations, chosen by
    measurement: the mask in the gradient's dtype, scaled and added to
    (fastest in fp32), or one select between the broadcast values written
    out to full size (bf16's kernels that broadcast along a channels_last
    map's innermost dim are several times slower: 3.3 against 5.8 ms at
    128 x 16 x 32 x 32 on an AVX-512 BF16 EPYC, 3.5 against 1.5 ms in fp32).
    Both give every position the same sum."""
    tensors = (x, result, grad) if also is None else (x, result, grad, also)
    fns = {"masked": partial(_masked, dims), "selected": partial(_selected, dims)}
    return run_fastest("amax_grad", fns, tensors, settings=(dims,), batched=len(tensors), try_fp32=False)


class _GlobalMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        result = run_fastest("global_max_pool", _SPATIAL_MAX, (x,), try_fp32=False)
        ctx.save_for_backward(x, result)
        return result

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, result = ctx.saved_tensors
        return _split_evenly(x, result, grad, (2, 3))


def global_max_pool(x: Tensor) -> Tensor:
    """Max over the spatial dims, kept as N x C x 1 x 1 (``x.amax((2, 3),
    keepdim=True)``, gradient included)."""
    return _GlobalMaxPool.apply(x)


class _ChannelMaxMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        top = run_fastest("channel_max", _CHANNEL_MAX, (x,), try_fp32=False)
        out = torch.empty((x.shape[0], 2, *x.shape[2:]), dtype=x.dtype, device=x.device, memory_format=_layout(x))
        out[:, :1] = top
        torch.mean(x, 1, keepdim=True, out=out[:, 1:])
        ctx.save_for_backward(x, top)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, top = ctx.saved_tensors
        return _split_evenly(x, top, grad[:, :1], 1, also=grad[:, 1:] / x.shape[1])


def channel_max_mean(x: Tensor) -> Tensor:
    """``cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)`` (N x 2 x
    H x W), gradient included, in ``x``'s memory layout: CBAM's spatial
    descriptor, which a 7x7 conv reads next (on a contiguous 2-channel map
    in a channels_last net that conv's backward runs ~3x slower)."""
    return _ChannelMaxMean.apply(x)
