"""Convolutional Block Attention Module (Woo et al., arXiv 1807.06521).

Channel attention (Eq. 2): M_c = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))),
one MLP C -> C/r -> C with biases shared by both descriptors. Spatial
attention (Eq. 3): M_s = sigmoid(BN(conv_kxk([max_c(F'); mean_c(F')]))),
2 -> 1 channels, k = 7, no conv bias. Two details follow the official code
(Jongchan/attention-module, cbam.py), so its checkpoints load unchanged and
train the same: the pooled maps are stacked max first (its ChannelPool; the
paper's Eq. 3 writes [AvgPool; MaxPool]), and the spatial BN has momentum
0.01 (PyTorch's convention: 1 % of each batch's statistics enters the
running average; PyTorch's default is 0.1). Applied in sequence (Eq. 1):
F' = M_c * F, F'' = M_s * F'.
Parameters: 2 C^2 / r + C / r + C + 2 k^2 + 2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_choice, check_int
from ._broadcast import times_map
from ._conv import conv2d
from ._pool import channel_max_mean, global_avg_pool, global_max_pool


class CBAM(nn.Module):
    kind = "gate"

    def __init__(self, channels: int, *, r: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        check_int("cbam", "r", r, 1, channels)
        check_choice("cbam", "spatial_kernel", spatial_kernel, (3, 5, 7))
        hidden = channels // r
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        # both descriptors through the shared MLP in one pass: the 1x1 convs
        # as matrix products on n x C rows (oneDNN's conv on 1x1 maps costs
        # ~3x a linear layer here); the weights stay conv-shaped, so the
        # official checkpoints load unchanged
        pooled = torch.cat([global_avg_pool(x).view(n, c), global_max_pool(x).view(n, c)])
        hidden = F.relu(F.linear(pooled, self.fc1.weight.flatten(1), self.fc1.bias))
        avg, top = F.linear(hidden, self.fc2.weight.flatten(1), self.fc2.bias).view(2, n, c, 1, 1)
        x = x * (avg + top).sigmoid()
        # the 2 -> 1 channel conv through the measured choice, which may run
        # it in fp32 under autocast; the gate goes back to x's dtype so the
        # product, and the module's output, stay in it
        gate = self.spatial_bn(conv2d(channel_max_mean(x), self.spatial)).sigmoid()
        return times_map(x, gate.to(x.dtype))
