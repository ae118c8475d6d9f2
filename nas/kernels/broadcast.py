"""A feature map times a map with one channel (N x 1 x H x W), as CBAM's
spatial gate applies it.

In a channels_last tensor the channel is the innermost dimension, so this
product broadcasts along it, and on CPU PyTorch's bf16 kernels fall off a
cliff there: measured on a 2-core AMD EPYC with AVX-512 BF16, batch 128,
16 x 32 x 32, forward + backward of ``x * m`` took 3.7 ms in bf16 against
1.1 ms when ``m`` is first written out to ``x``'s full shape (an expand and
a copy) and the product then broadcasts nothing; in fp32 the plain product
is the faster one (1.8 against 2.0 ms). :func:`nas.kernels.choice.run_fastest`
chooses per shape and dtype; both compute the same products.
"""
from __future__ import annotations

from torch import Tensor

from .choice import run_fastest
from .pool import written_out


def _materialized(x: Tensor, m: Tensor) -> Tensor:
    return x * written_out(m, x)


_TIMES_MAP = {"broadcast": lambda x, m: x * m, "materialized": _materialized}


def times_map(x: Tensor, m: Tensor) -> Tensor:
    """``x * m`` for ``x`` N x C x H x W and ``m`` N x 1 x H x W (gradient
    included), in whichever formulation is faster here. Under autocast the
    product stays in the inputs' dtype (an fp32 product of a bf16 map would
    hand the rest of the network an fp32 tensor)."""
    return run_fastest("times_map", _TIMES_MAP, (x, m), batched=2, try_fp32=False)
