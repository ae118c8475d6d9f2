"""Bottleneck Attention Module (Park et al., "BAM", arXiv 1807.06514).
Placed once per stage transition (the network's bottlenecks), not per block.

F' = F + F * sigmoid(M_c(F) + M_s(F)) (Eq. 1-2).
Channel branch (Eq. 3): GAP -> FC C -> C/r -> BN -> ReLU -> FC C/r -> C.
Spatial branch (Eq. 4): 1x1 conv C -> C/r, ``num_dilated`` 3x3 convs with
dilation ``dilation`` (2 and 4 in the paper), 1x1 conv C/r -> 1; BN and ReLU
after every conv but the last; convs with bias as in the official code.
M_c (C x 1 x 1) and M_s (1 x H x W) broadcast to C x H x W before the sum.
Parameters: channel 2 C^2/r + 3 C/r + C; spatial C^2/r + 3 C/r +
num_dilated (9 (C/r)^2 + 3 C/r) + C/r + 1.
"""
from __future__ import annotations

from torch import Tensor, nn

from ._checks import check_int
from ._pool import global_avg_pool


class BAM(nn.Module):
    kind = "transition"

    def __init__(self, channels: int, *, r: int = 16, dilation: int = 4, num_dilated: int = 2) -> None:
        super().__init__()
        check_int("bam", "r", r, 1, channels)
        check_int("bam", "dilation", dilation, 1)
        check_int("bam", "num_dilated", num_dilated, 0)
        hidden = channels // r
        self.channel_gate = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        layers: list[nn.Module] = [nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        for _ in range(num_dilated):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
                       nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden, 1, 1))
        self.spatial_gate = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        attention = (self.channel_gate(global_avg_pool(x)) + self.spatial_gate(x)).sigmoid()
        return x + x * attention
