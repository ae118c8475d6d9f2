"""The grouped, dilated and large-kernel convs inside SK and PSA, computed
whichever equivalent way is fastest on this machine.

oneDNN's CPU kernels are fast for dense convs and plain depthwise convs but
fall off a cliff for some of the shapes these modules use. Measured on a
2-core AMD EPYC (AVX2, fp32, channels_last, batch 128, forward + backward):
a 3x3 depthwise conv at dilation 2 on 16 x 32 x 32 takes 112 ms, the same
conv written as a 5x5 kernel with zeros between the taps 23 ms; a 9x9 conv
with 4 groups of 4 -> 1 channels takes 80 ms grouped, 55 ms as a depthwise
conv followed by a sum over each group's inputs. Elsewhere the plain form
wins (a dense dilated conv gets slower with the zeros), so
:func:`nas.kernels.choice.run_fastest` times the formulations that apply on the
first call with each shape and keeps the winner. Every formulation computes
the same sum of products; only rounding differs.

Also here: the two helpers that keep a module's output and input gradient in
the layout the network runs in (channels_last on CPU).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .choice import run_fastest


def in_layout_of(t: Tensor, like: Tensor) -> Tensor:
    """``t`` in ``like``'s memory layout (channels_last or contiguous): a
    module that hands a channels_last network a contiguous tensor makes
    every later BN and conv, and their backward, run on mixed layouts,
    several times slower on CPU."""
    channels_last = like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous()
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class _Contiguous(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return x.contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=torch.channels_last if ctx.channels_last else torch.contiguous_format)


def contiguous_keeping_grad_layout(x: Tensor) -> Tensor:
    """``x.contiguous()`` whose gradient goes back in ``x``'s layout (plain
    ``contiguous`` hands a channels_last input a contiguous gradient, with
    the cost :func:`in_layout_of` describes)."""
    return _Contiguous.apply(x)


def zero_inserted(weight: Tensor, dilation: int) -> Tensor:
    """A k x k kernel at ``dilation`` d as the (d (k-1) + 1)-sized kernel
    with d - 1 zeros between neighbouring taps: same output at dilation 1."""
    if dilation == 1:
        return weight
    o, i, k, _ = weight.shape
    size = dilation * (k - 1) + 1
    spread = F.pad(weight[:, :, :, None, :, None], (0, dilation - 1, 0, 0, 0, dilation - 1))
    return spread.reshape(o, i, k * dilation, k * dilation)[:, :, :size, :size]


def block_diagonal(weight: Tensor, groups: int) -> Tensor:
    """A grouped conv's weight (C_out, C_in / G, k, k) as the dense weight
    (C_out, C_in, k, k) that is zero outside each output's own group."""
    out = weight.shape[0]
    owner = torch.arange(out, device=weight.device) // (out // groups)
    one_hot = F.one_hot(owner, groups).to(weight.dtype)  # C_out x G
    return (one_hot[:, :, None, None, None] * weight[:, None]).flatten(1, 2)


def _depthwise_then_sum(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int,
                        groups: int) -> Tensor:
    """Grouped conv as a depthwise conv with one filter per (input, output)
    pair of a group, then a sum over each group's inputs (and the bias)."""
    out, per_group_in = weight.shape[:2]
    per_group_out = out // groups
    k = weight.shape[-1]
    # depthwise channel (input i of group g, output j) <- weight[g * per_group_out + j, i]
    depthwise = weight.view(groups, per_group_out, per_group_in, k, k).transpose(1, 2).reshape(-1, 1, k, k)
    y = F.conv2d(x, depthwise, None, stride, padding, 1, x.shape[1])
    n, _, h, w = y.shape
    summed = y.view(n, groups, per_group_in, per_group_out, h, w).sum(2).view(n, out, h, w)
    if bias is not None:
        summed = summed + bias.view(1, out, 1, 1)
    return in_layout_of(summed, x)  # the reduction hands back a contiguous tensor


def conv2d(x: Tensor, conv: nn.Conv2d, weight: Tensor | None = None) -> Tensor:
    """``conv(x)`` (square kernel, int stride/padding/dilation), in the
    fastest formulation (and precision, under autocast) for this shape;
    ``weight`` in place of ``conv.weight`` when the caller holds its own
    handle on it (a formulation given detached copies to time)."""
    weight = conv.weight if weight is None else weight
    tensors = (x, weight) if conv.bias is None else (x, weight, conv.bias)
    return run_fastest("conv2d", formulations(conv), tensors, conv_settings(conv))


def conv_settings(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    return conv.stride[0], conv.padding[0], conv.dilation[0], conv.groups


def formulations(conv: nn.Conv2d) -> dict:
    """name -> f(x, weight[, bias]) for every formulation that applies to
    ``conv``; the first is the plain one."""
    stride, padding, dilation, groups = conv.stride[0], conv.padding[0], conv.dilation[0], conv.groups

    def plain(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    def spread(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        return F.conv2d(x, zero_inserted(w, dilation), b, stride, padding, 1, groups)

    def dense(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        return F.conv2d(x, block_diagonal(w, groups), b, stride, padding, dilation, 1)

    def dense_spread(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        return F.conv2d(x, block_diagonal(zero_inserted(w, dilation), groups), b, stride, padding, 1, 1)

    def depthwise_sum(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        return _depthwise_then_sum(x, zero_inserted(w, dilation), b, stride, padding, groups)

    formulations = {"plain": plain}
    if dilation > 1:
        formulations["zero_inserted"] = spread
    if groups > 1:
        formulations["dense"] = dense
        if dilation > 1:
            formulations["dense_zero_inserted"] = dense_spread
        if conv.weight.shape[1] > 1:  # inputs per group; with one it is a depthwise conv already
            formulations["depthwise_sum"] = depthwise_sum
    return formulations


def maps_to_one_by_row_products(planes: list[Tensor], weight: Tensor) -> Tensor:
    """A stride-1, 'same'-padded k x k conv of C single-channel maps (``planes``,
    each N x H x W) into one map (weight 1 x C x k x k, no bias), as one matrix
    product: output row i is the sum over (channel c, kernel row a) of input
    row i + a - k // 2 times a W x W band matrix holding the kernel row's taps
    (zero padding at the row ends is the band's missing corners). The
    input-row stack (N H x C k W) is what a compiler fuses into one copy
    loop; eagerly it is only memory traffic.

    Why: CBAM's 2 -> 1 channel 7x7 spatial conv runs at ~8 GMAC/s in oneDNN
    on CPU (1.2 ms forward, 1.9 ms backward at 128 x 32 x 32, bf16, AMD EPYC)
    against ~200 for a dense 3x3 conv: one output channel leaves its
    vector units idle. As a product with W output columns it runs at matrix
    speed, for W / k times the multiply-adds (the band's zeros), which is
    why :data:`ROW_PRODUCT_MAX_WIDTH` bounds W."""
    n, h, w = planes[0].shape
    k = weight.shape[-1]
    pad = k // 2
    col = torch.arange(w, device=weight.device)
    offsets = torch.arange(k, device=weight.device) - pad
    # band[b, j_in, j_out] = 1 where input column j_in feeds output column j_out through tap b
    band = (col[:, None] - col[None, :] == offsets[:, None, None]).to(weight.dtype)
    rows_to_row = torch.einsum("ocab,bij->caij", weight, band).reshape(len(planes) * k * w, w)
    padded = [F.pad(p, (0, 0, pad, pad)) for p in planes]
    stacked = torch.stack([p[:, a:a + h] for p in padded for a in range(k)], 2)  # N x H x C k x W
    return (stacked.reshape(n * h, -1) @ rows_to_row).view(n, 1, h, w)


#: widths up to which :func:`maps_to_one_by_row_products` was measured faster
#: than the conv (32, 16 and 8 on CIFAR's stages; see docs/measurements/attention-speed.md on CBAM)
ROW_PRODUCT_MAX_WIDTH = 32
