"""Bottleneck Attention Module (Park et al., "BAM", arXiv 1807.06514).
Placed once per stage transition (the network's bottlenecks), not per block.

Both branches follow the official code (Jongchan/attention-module, bam.py):
channel branch M_c: GAP -> FC C -> C/r -> BN -> ReLU -> FC C/r -> C;
spatial branch M_s: 1x1 conv C -> C/r, ``num_dilated`` 3x3 convs with
dilation ``dilation`` (the paper's d = 4, two of them), 1x1 conv C/r -> 1;
BN and ReLU after every conv but the last; convs with bias. The paper's
Eq. 3-4 instead put one BN on each branch's *output* (BN(MLP(.)) and
BN(f_3(...))); the layers here are the code's, in both combinations below.
M_c (C x 1 x 1) and M_s (1 x H x W) broadcast to C x H x W.

How the branches combine, ``combine``:

* ``"sum"``: F' = F + F * sigmoid(M_c + M_s), the paper's Eq. 1-2. With the
  code's layers this is a hybrid of the two sources; it is the default
  because configs written before the option existed compute it.
* ``"product"``: F' = F * (1 + sigmoid(M_c * M_s)), what the official code
  computes, and so what the published ImageNet and CIFAR figures were
  trained with: :func:`nas.paper_config` builds this one.

Parameters (either combination): channel 2 C^2/r + 3 C/r + C; spatial
C^2/r + 3 C/r + num_dilated (9 (C/r)^2 + 3 C/r) + C/r + 1.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..kernels.pool import global_avg_pool
from ._base import AttentionModule, PaperPlacement
from ._checks import check_choice, check_int

COMBINE = ("sum", "product")


class BAM(AttentionModule):
    kind = "transition"
    #: once after each of the first three stages (Park et al. sec. 3, Fig. 1);
    #: the branches multiplied, as the official code that trained the
    #: published models does (see the module docstring)
    paper_placement = PaperPlacement(backbone="resnet50", stride_on="1x1", params={"combine": "product"})
    #: added after configs existed; at this value the module computes what it
    #: computed before, so structure hashes leave it out (see nas.model.config)
    legacy_defaults = {"combine": "sum"}

    def __init__(self, channels: int, *, r: int = 16, dilation: int = 4, num_dilated: int = 2,
                 combine: str = "sum") -> None:
        super().__init__()
        check_int("bam", "r", r, 1, channels)
        check_int("bam", "dilation", dilation, 1)
        check_int("bam", "num_dilated", num_dilated, 0)
        self.combine = check_choice("bam", "combine", combine, COMBINE)
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
        channel, spatial = self.channel_gate(global_avg_pool(x)), self.spatial_gate(x)
        logits = channel + spatial if self.combine == "sum" else channel * spatial
        return x + x * logits.sigmoid()
