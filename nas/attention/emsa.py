"""Efficient multi-head self-attention (Zhang & Yang, "ResT: An Efficient
Transformer for Visual Recognition", arXiv 2105.13677, sec. 3.1; official
code wofmanaf/ResT, models/rest.py ``Attention`` and ``Block``).

As a gate it is applied as ResT's block applies it, to the H W positions of
the map as tokens: y = x + EMSA(LN(x)), LN a LayerNorm over the channels.
EMSA, on tokens z (N x C), with ``heads`` heads of C / heads channels:

* queries from every position: Q = z W_q (Eq. 2's Q);
* keys and values from a reduced map: z is reshaped to C x H x W, reduced by
  a depthwise conv with kernel sr + 1, stride sr, padding sr // 2 (with
  bias), flattened to N' tokens and LayerNorm-ed (sec. 3.1; skipped when
  sr = 1), then K, V = z' W_kv;
* A = Q K^T / sqrt(C / heads), per head (Eq. 2);
* heads > 1: ResT's transform, a 1x1 conv across the heads (with bias),
  then softmax over the keys, then InstanceNorm over each head's N x N'
  map (no affine), in that order (Eq. 2: IN(Softmax(Conv(A)))); heads = 1:
  a plain softmax (computed as written or by PyTorch's fused attention
  kernel, whichever is faster for the shape: ``nas.kernels.choice.run_fastest``);
* output: concat over heads of A V, then a linear projection W_p (with bias).

``qkv_bias``: biases on W_q and W_kv (ResT's models set it; the ``Attention``
class defaults to none). Defaults: heads 1, sr 1 (the ``Attention`` class's
sr), qkv_bias true; ResT-Lite uses heads 1, 2, 4, 8 and sr 8, 4, 2, 1 over
its four stages, which :func:`nas.paper_config` follows per stage.

Each head's attention map has N x N' entries; it is allowed where that is
at most ``max_map`` = 65,536, the map DANet and EA have at their own limits
(DANet's 256 x 256 positions, EA's 1,024 positions x 64 memory slots): on a
32 x 32 CIFAR stage, sr >= 4.

Parameters, C channels: LayerNorm 2C; W_q C^2, W_kv 2 C^2, with qkv_bias
3C more; W_p C^2 + C; sr > 1: depthwise conv C (sr+1)^2 + C and LayerNorm
2C; heads > 1: transform conv heads^2 + heads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.choice import run_fastest
from ..kernels.conv import conv2d
from ._base import AttentionModule, PaperPlacement, StageFacts, largest_divisor
from ._checks import check_divides, check_int

#: ResT-Lite's heads and key/value reduction per stage (wofmanaf/ResT, rest_lite)
REST_LITE = {"heads": (1, 2, 4, 8), "sr": (8, 4, 2, 1)}


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax(Q K^T scale) V as written (Eq. 2 without the transform)."""
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1) @ v


def _attend_fused(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """The same through PyTorch's fused attention kernel: on CPU 4x faster
    than :func:`_attend` with 64 keys, slower with 16 (2-core AMD EPYC, fp32,
    forward + backward), so :func:`nas.kernels.choice.run_fastest` picks per shape."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def reduced_side(side: int, sr: int) -> int:
    """Side of the key/value map after the depthwise reduction."""
    return (side + 2 * (sr // 2) - (sr + 1)) // sr + 1 if sr > 1 else side


def smallest_fitting_sr(side: int, max_map: int) -> int | None:
    """The smallest sr (at most ``side``) whose per-head attention map on a
    ``side`` x ``side`` map has at most ``max_map`` entries, or None."""
    return next((sr for sr in range(1, side + 1) if side * side * reduced_side(side, sr) ** 2 <= max_map), None)


class EfficientSelfAttention(nn.Module):
    """ResT's ``Attention`` (the part inside the residual), on N x C tokens."""

    def __init__(self, channels: int, heads: int, sr: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads, self.sr = heads, sr
        self.scale = (channels // heads) ** -0.5
        self.q = nn.Linear(channels, channels, bias=qkv_bias)
        self.kv = nn.Linear(channels, 2 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        if sr > 1:
            self.reduce = nn.Conv2d(channels, channels, sr + 1, stride=sr, padding=sr // 2, groups=channels)
            self.reduce_norm = nn.LayerNorm(channels)
        if heads > 1:
            self.transform = nn.Conv2d(heads, heads, 1)
            self.transform_norm = nn.InstanceNorm2d(heads)

    def _mix_heads(self, attn: Tensor) -> Tensor:
        """``self.transform`` (a 1x1 conv across the heads) as one matrix
        product per image over the flattened maps: the same sums, but oneDNN
        runs a 1x1 conv with 4 channels on a 256 x 256 map at a fraction of
        memory speed (forward + backward 1.3 s of a 2.4 s module step at
        batch 128, 2-core AMD EPYC, fp32)."""
        n, heads = attn.shape[:2]
        weight = self.transform.weight.view(heads, heads).to(attn.dtype)
        mixed = torch.bmm(weight.expand(n, heads, heads), attn.reshape(n, heads, -1)).view_as(attn)
        return mixed + self.transform.bias.to(attn.dtype).view(1, heads, 1, 1)

    def forward(self, tokens: Tensor, h: int, w: int) -> Tensor:
        n, length, c = tokens.shape
        heads = self.heads
        q = self.q(tokens).view(n, length, heads, c // heads).transpose(1, 2)  # n x heads x N x C/heads
        if self.sr > 1:
            grid = tokens.transpose(1, 2).reshape(n, c, h, w)
            # the depthwise reduction through nas.kernels.choice.run_fastest: its bf16
            # backward in oneDNN is several times its fp32 one on CPU
            kv_tokens = self.reduce_norm(conv2d(grid, self.reduce).flatten(2).transpose(1, 2))
        else:
            kv_tokens = tokens
        k, v = self.kv(kv_tokens).view(n, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        if heads > 1:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # n x heads x N x N'; scaling q is N' / d times less work
            attn = self.transform_norm(self._mix_heads(attn).softmax(dim=-1))
            out = attn @ v
        else:
            scale = self.scale
            out = run_fastest("attention", {"plain": lambda *t: _attend(*t, scale),
                                            "fused": lambda *t: _attend_fused(*t, scale)}, (q, k, v), batched=3)
        out = out.transpose(1, 2).reshape(n, length, c)
        return self.proj(out)


class EMSA(AttentionModule):
    kind = "gate"
    #: entries of one head's N x N' attention map (see module docstring)
    max_map = 256 * 256
    #: ResT puts x + EMSA(LN(x)) in every block, on the main path (the block
    #: output here); heads and sr per stage as ResT-Lite (fit_to_stage)
    paper_placement = PaperPlacement(backbone=None, position="post")

    @classmethod
    def fit_to_stage(cls, defaults: dict, overrides: dict, stage: StageFacts) -> dict:
        """ResT-Lite's heads and sr for the stage (its last for deeper
        stages), heads cut to a divisor of the stage's output channels and
        sr raised to the smallest whose attention map fits the stage's
        output (where the post position reads it): on ResNet-50 at 224 the
        56 x 56 first stage needs sr 14, not 8."""
        i = min(stage.index, len(REST_LITE["sr"]) - 1)
        fitted = {}
        if "heads" not in overrides:
            fitted["heads"] = largest_divisor(stage.out, REST_LITE["heads"][i])
        if "sr" not in overrides:
            side = stage.feature_size
            fitted["sr"] = min(max(REST_LITE["sr"][i], smallest_fitting_sr(side, cls.max_map) or side), side)
        return fitted

    def __init__(self, channels: int, *, heads: int = 1, sr: int = 1, qkv_bias: bool = True) -> None:
        super().__init__()
        check_divides("emsa", "heads", heads, channels, "channels")
        check_int("emsa", "sr", sr, 1)
        if not isinstance(qkv_bias, bool):
            raise ValueError(f"emsa: qkv_bias must be true or false, got {qkv_bias!r}")
        self.norm = nn.LayerNorm(channels)
        self.attention = EfficientSelfAttention(channels, heads, sr, qkv_bias)

    def check_feature_size(self, size: int) -> None:
        """sr must fit the map, and each head's map must stay within ``max_map``."""
        sr = self.attention.sr
        if sr > size:
            raise ValueError(f"emsa: sr={sr} reduces a {size}x{size} map by more than its side; allowed: sr <= {size}")
        queries, keys = size * size, reduced_side(size, sr) ** 2
        if queries * keys > self.max_map:
            fitting = smallest_fitting_sr(size, self.max_map)
            allowed = f"sr >= {fitting}" if fitting is not None else "none (the queries alone exceed it)"
            raise ValueError(
                f"emsa: sr={sr} on a {size}x{size} map gives each head a {queries}x{keys} attention map "
                f"(> {self.max_map} entries); allowed here: {allowed}")

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        # tokens are the channels_last view of x: free when the network runs
        # channels_last, as it does on CPU
        tokens = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
        out = self.attention(self.norm(tokens), h, w)
        return x + out.view(n, h, w, c).permute(0, 3, 1, 2)
