"""Shuffle Attention (Zhang & Yang, "SA-Net", arXiv 2102.00240).

Channels are split into G groups; each group splits in half. The channel
half is scaled by sigmoid(w_c * GAP(x) + b_c) (Eq. 3), the spatial half by
sigmoid(w_s * GN(x) + b_s) (Eq. 4), with per-channel w, b of size C/(2G)
shared across groups. The halves are concatenated and channels shuffled with
2 groups so information crosses the halves. G must divide C/2.
Parameters: 6 * C / (2G) = 3 C / G (w_c, b_c, w_s, b_s and GroupNorm's affine).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..kernels.conv import contiguous_keeping_grad_layout
from ..kernels.pool import global_avg_pool
from ._base import AttentionModule, PaperPlacement, StageFacts, largest_divisor
from ._checks import check_divides, check_int


class ShuffleAttention(AttentionModule):
    kind = "gate"
    paper_placement = PaperPlacement(backbone="resnet50", stride_on="3x3", position="standard")
    #: chosen after the position in a search, as it always was, so that a
    #: seeded search draws the same architectures
    suggest_last = ("groups",)

    @classmethod
    def fit_to_stage(cls, defaults: dict, overrides: dict, stage: StageFacts) -> dict:
        """The paper's G = 64 does not divide a small stage's C/2 (16 channels
        on CIFAR): the largest divisor of C/2 not above it."""
        if "groups" in overrides:
            return {}
        return {"groups": largest_divisor(stage.out // 2, defaults["groups"])}

    def __init__(self, channels: int, *, groups: int = 64) -> None:
        super().__init__()
        check_int("sa", "groups", groups, 1)
        if channels % 2:
            raise ValueError(f"sa: channels must be even, got {channels}")
        check_divides("sa", "groups", groups, channels // 2, "C/2")
        self.groups = groups
        half = channels // (2 * groups)
        # initial values of the official code: the gates start at sigmoid(1)
        self.channel_weight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.channel_bias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.spatial_weight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.spatial_bias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.norm = nn.GroupNorm(half, half)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        grouped = contiguous_keeping_grad_layout(x).view(n * self.groups, c // self.groups, h, w)
        xc, xs = grouped.chunk(2, dim=1)
        # the channel gate, one value per image and channel, is computed in
        # fp32 under autocast (fp32 parameters) and goes back to the feature
        # map's dtype before the product: an fp32 product hands the rest of a
        # bf16 network an fp32 tensor (it did: the module's output was fp32
        # under bf16 autocast, and the residual add after it ran fp32)
        xc = xc * (self.channel_weight * global_avg_pool(xc) + self.channel_bias).sigmoid().to(xc.dtype)
        # the spatial gate is a full map: its arithmetic runs in the dtype
        # GroupNorm returns (the map's on CPU, where autocast leaves
        # GroupNorm alone), with the parameters cast to it, instead of being
        # promoted to fp32 by them and cast back (that round trip was ~30 %
        # of the module's first-stage time: resnet20, bf16, AMD EPYC)
        normed = self.norm(xs)
        gate = (self.spatial_weight.to(normed.dtype) * normed + self.spatial_bias.to(normed.dtype)).sigmoid()
        xs = xs * gate.to(xs.dtype)
        out = torch.cat([xc, xs], dim=1).view(n, 2, c // 2, h, w)
        # channel shuffle with 2 groups (channel 2i + a <- a C/2 + i), written
        # once, straight into the input's memory layout: a channels_last net
        # that gets a contiguous tensor back runs every later BN and conv
        # backward on mixed layouts (resnet20, AVX2, fp32: BN backward ~5x
        # slower, the whole step ~1.3x)
        shuffled = torch.empty_like(x, dtype=out.dtype)  # same layout as x
        shuffled.view(n, c // 2, 2, h, w).copy_(out.transpose(1, 2))
        return shuffled

