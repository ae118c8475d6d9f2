"""Squeeze-and-Excitation (Hu et al., "Squeeze-and-Excitation Networks",
arXiv 1709.01507).

Squeeze (Eq. 2): z_c = mean over H x W of u_c (``squeeze="max"``: the max,
one of the paper's Table 11 ablations). Excitation (Eq. 3):
s = gate(W2 relu(W1 z)), W1: C -> C/r, W2: C/r -> C, both with bias, gate =
sigmoid (``"hard_sigmoid"``: the cheap variant of the ablations). Scale
(Eq. 4): x_c * s_c. Parameters: 2 C^2 / r + C / r + C.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.pool import global_avg_pool
from ._base import AttentionModule, PaperPlacement
from ._checks import check_choice, check_int

GATES = {"sigmoid": nn.Sigmoid, "hard_sigmoid": nn.Hardsigmoid}


class SqueezeExcite(AttentionModule):
    kind = "gate"
    #: SE Caffe models stride on the first 1x1 (hujie-frank/SENet prototxt)
    paper_placement = PaperPlacement(backbone="resnet50", stride_on="1x1", position="standard")

    def __init__(self, channels: int, *, r: int = 16, squeeze: str = "avg", gate: str = "sigmoid") -> None:
        super().__init__()
        check_int("se", "r", r, 1, channels)
        check_choice("se", "squeeze", squeeze, ("avg", "max"))
        check_choice("se", "gate", gate, tuple(GATES))
        hidden = channels // r
        self.squeeze = squeeze
        # 1x1 convs on the pooled vector are the paper's FCs and keep the data 4-d
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = GATES[gate]()

    def forward(self, x: Tensor) -> Tensor:
        z = global_avg_pool(x) if self.squeeze == "avg" else x.amax((2, 3), keepdim=True)
        return x * self.gate(self.fc2(F.relu(self.fc1(z))))
