"""Efficient Channel Attention (Wang et al., "ECA-Net", arXiv 1910.03151).

GAP, then a 1-D convolution of kernel k across the channel axis without bias
(local cross-channel interaction, no dimensionality reduction), sigmoid,
scale. The kernel adapts to the channel count (Eq. 12):
k = |log2(C) / gamma + b / gamma| rounded to the nearest odd number, with
gamma = 2, b = 1, unless ``k_size`` fixes it. Parameters: k.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from ..kernels.pool import global_avg_pool
from ._base import AttentionModule, PaperPlacement
from ._checks import check_int, check_odd


def adaptive_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """Eq. 12 as the official code computes it: truncate, then bump to odd."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(AttentionModule):
    kind = "gate"
    #: the released ECA-Net50 is trained with k = 3, 5, 5, 7 per stage (BangguWu/ECANet, "k3557")
    paper_placement = PaperPlacement(backbone="resnet50", stride_on="3x3", position="standard",
                                     per_stage={"k_size": (3, 5, 5, 7)})

    def __init__(self, channels: int, *, k_size: int | None = None, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        check_int("eca", "gamma", gamma, 1)
        check_int("eca", "b", b, 0)
        k = adaptive_kernel_size(channels, gamma, b) if k_size is None else check_odd("eca", "k_size", k_size)
        self.k_size = k
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        y = self.conv(global_avg_pool(x).view(n, 1, c))  # channels become the 1-D sequence
        return x * y.sigmoid().view(n, c, 1, 1)
