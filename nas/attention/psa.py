"""Pyramid Split Attention (Zhang et al., "EPSANet", arXiv 2105.14447).
Replaces a bottleneck's 3x3 conv unit.

SPC (sec. 3.2, Eq. 1-2): S = len(kernels) parallel convs, part i with kernel
k_i and groups g_i, each producing C/S channels (default kernels 3, 5, 7, 9
with groups 1, 4, 8, 16). SEWeight (Eq. 3-4): one SE module (C/S -> C/(S r)
-> C/S, with biases, r = 16) shared by all parts gives each part's channel
weights; softmax across the S parts (Eq. 6) recalibrates them (Eq. 7-8) and
the parts are concatenated (Eq. 9) in the official code's order, last part
first (murufeng/EPSANet, PSAModule.forward: S..1), so that its weights, the
following BN's above all, load unchanged. Followed by BN and ReLU, as the block's
3x3 conv would be. Parameters: sum_i k_i^2 C_in (C/S) / g_i + 2 (C/S)^2/r +
C/(S r) + C/S + 2 C.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.conv import conv2d
from ..kernels.pool import global_avg_pool
from ._base import AttentionModule, PaperPlacement, StageFacts, largest_divisor
from ._checks import check_divides, check_int, check_int_list, check_odd


class PSAConv(AttentionModule):
    kind = "conv"
    paper_placement = PaperPlacement(backbone="resnet50", stride_on="3x3")
    #: one group count per kernel: groups is chosen after kernels
    suggest_last = ("groups",)

    @classmethod
    def fit_to_stage(cls, defaults: dict, overrides: dict, stage: StageFacts) -> dict:
        """Each part's group count cut to the largest divisor of the part's
        channels not above the paper's, and r to at most those channels."""
        if "groups" in overrides:
            return {}
        kernels = overrides.get("kernels", defaults["kernels"])
        split = stage.mid // len(kernels)
        fitted = {"groups": [largest_divisor(split, g) for g in defaults["groups"]][: len(kernels)]}
        if "r" not in overrides:
            fitted["r"] = min(defaults["r"], split)
        return fitted

    @classmethod
    def list_length(cls, name: str, values: dict, defaults: dict) -> int:
        """One group count per kernel."""
        if name == "groups":
            return len(values.get("kernels", defaults["kernels"]))
        return super().list_length(name, values, defaults)

    @classmethod
    def upgrade_state_format_1(cls, name: str, state: dict) -> bool:
        """Format 1 concatenated the parts first to last: the reversed order
        changes what the rest of the block sees, which no conversion of the
        weights undoes."""
        return False

    def __init__(self, channels: int, *, out_channels: int | None = None, stride: int = 1,
                 kernels: list[int] = (3, 5, 7, 9), groups: list[int] = (1, 4, 8, 16), r: int = 16) -> None:
        super().__init__()
        out = channels if out_channels is None else out_channels
        kernels = check_int_list("psa", "kernels", kernels)
        groups = check_int_list("psa", "groups", groups, len(kernels))
        parts = len(kernels)
        check_divides("psa", "len(kernels)", parts, out, "output channels")
        split = out // parts
        for k, g in zip(kernels, groups):
            check_odd("psa", "kernels", k)
            check_divides("psa", "groups", g, channels, "input channels")
            check_divides("psa", "groups", g, split, "output channels / len(kernels)")
        check_int("psa", "r", r, 1, split)
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, split, k, stride=stride, padding=k // 2, groups=g, bias=False)
            for k, g in zip(kernels, groups)
        )
        self.se_fc1 = nn.Conv2d(split, split // r, 1)
        self.se_fc2 = nn.Conv2d(split // r, split, 1)
        self.bn = nn.BatchNorm2d(out)

    def forward(self, x: Tensor) -> Tensor:
        feats = [conv2d(x, conv) for conv in self.convs]  # S parts, n x C/S x H x W each
        n, c = feats[0].shape[:2]
        pooled = torch.stack([global_avg_pool(f) for f in feats], dim=1).reshape(n * len(feats), c, 1, 1)
        weights = self.se_fc2(F.relu(self.se_fc1(pooled))).sigmoid().view(n, len(feats), c, 1, 1)
        weights = weights.softmax(dim=1).unbind(1)
        # parts S..1, as the official code concatenates; written straight
        # into the output instead of stacking, scaling and flipping
        out = torch.cat([feats[i] * weights[i] for i in reversed(range(len(feats)))], dim=1)
        return F.relu(self.bn(out), inplace=True)
