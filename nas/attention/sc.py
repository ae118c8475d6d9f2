"""Self-calibrated convolution (Liu et al., "Improving Convolutional Networks
with Self-Calibrated Convolutions", CVPR 2020; official code
backseason/SCNet, ``SCConv`` and ``SCBottleneck``). Replaces a block's 3x3
conv unit.

The unit's input is split into two halves of the channels (in SCNet's
bottleneck each half is the output of its own 1x1 conv; here the block's one
1x1 conv produces both, which is the same map with the same parameters):

* X1 -> K1: Y1 = ReLU(BN(conv3x3(X1))) (sec. 3.1, the plain path; carries
  the stride);
* X2 -> self-calibration (sec. 3.1, Eq. 1-4):
  T = AvgPool_r(X2) (Eq. 1, r x r windows, stride r);
  X2' = Up(BN(K2 * T)) (Eq. 2, back to X2's size);
  Y2' = BN(K3 * X2) . sigmoid(X2 + X2') (Eq. 3);
  Y2 = ReLU(BN(K4 * Y2')) (Eq. 4; K4 carries the stride).

Output: concat(Y1, Y2). K1..K4 are 3x3 convs without bias, each with a BN,
with ``groups`` groups (the official code passes the backbone's cardinality;
:func:`nas.paper_config` does so on ResNeXt).
The paper's text upsamples bilinearly; the official code calls
``F.interpolate`` without a mode, which is nearest-neighbour, and its
released models were trained so: ``upsample="nearest"`` is the default,
``"bilinear"`` the paper's wording. Defaults: pooling rate r = 4 (the
paper's).

On a basic block (no 1x1 conv before the unit) the halves are the two
halves of the block input's channels, with the same four convs; K2, K3 and
the gate keep the input's half width and K1, K4 map it to half the output
width, so a stage's first block (more output channels, stride 2) works too.

Parameters, with a = C_in / 2, b = C_out / 2 and g groups: K1 and K4
9ab/g + 2b each, K2 and K3 9a^2/g + 2a each: (18ab + 18a^2)/g + 4a + 4b.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import AttentionModule, PaperPlacement, StageFacts, largest_divisor
from ._checks import check_choice, check_divides, check_int

UPSAMPLING = ("nearest", "bilinear")


def _conv_bn(in_channels: int, out_channels: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels))


class SCConv(AttentionModule):
    kind = "conv"
    #: SCNet-50 is torchvision's ResNet-50 with every bottleneck's 3x3 unit
    #: self-calibrated (backseason/SCNet, scnet50: no deep stem, no avg-down)
    paper_placement = PaperPlacement(backbone="resnet50", stride_on="3x3")
    #: chosen after r and upsample in a search, as it always was, so that a
    #: seeded search draws the same architectures
    suggest_last = ("groups",)

    @classmethod
    def fit_to_stage(cls, defaults: dict, overrides: dict, stage: StageFacts) -> dict:
        """The official SCConv takes the backbone's cardinality as its groups
        (cut to a divisor of half the conv's channels)."""
        if "groups" in overrides or stage.groups <= 1:
            return {}
        return {"groups": largest_divisor(stage.mid // 2, stage.groups)}

    def __init__(self, channels: int, *, out_channels: int | None = None, stride: int = 1, r: int = 4,
                 upsample: str = "nearest", groups: int = 1) -> None:
        super().__init__()
        out = channels if out_channels is None else out_channels
        for what, n in (("input", channels), ("output", out)):
            if n % 2:
                raise ValueError(f"sc: {what} channels must be even (split between the two paths), got {n}")
        self.r = check_int("sc", "r", r, 1)
        self.upsample = check_choice("sc", "upsample", upsample, UPSAMPLING)
        a, b = channels // 2, out // 2
        check_divides("sc", "groups", groups, a, "input channels / 2")
        check_divides("sc", "groups", groups, b, "output channels / 2")
        self.k1 = _conv_bn(a, b, stride, groups)
        self.k2 = _conv_bn(a, a, 1, groups)
        self.k3 = _conv_bn(a, a, 1, groups)
        self.k4 = _conv_bn(a, b, stride, groups)

    def check_feature_size(self, size: int) -> None:
        """The r x r pooling needs a map at least r wide."""
        if self.r > size:
            raise ValueError(f"sc: r={self.r} pools r x r windows of a {size}x{size} map; allowed: r <= {size}")

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        y1 = F.relu(self.k1(x1), inplace=True)
        t = self.k2(F.avg_pool2d(x2, self.r, self.r))
        mode = dict(mode="bilinear", align_corners=False) if self.upsample == "bilinear" else {}
        calibration = torch.sigmoid(x2 + F.interpolate(t, size=x2.shape[-2:], **mode))
        y2 = F.relu(self.k4(self.k3(x2) * calibration), inplace=True)
        return torch.cat([y1, y2], dim=1)
