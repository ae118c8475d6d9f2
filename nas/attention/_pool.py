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

import torch
from torch import Tensor


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
