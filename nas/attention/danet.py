"""Dual attention (Fu et al., "DANet", arXiv 1809.02983).

Position attention (sec. 3.2, Eq. 1-2): B, C' = 1x1 convs C -> C/r (r = 8),
D = 1x1 conv C -> C; s_ji = softmax_i(B_i . C'_j) over the N = H W positions;
E_j = gamma * sum_i s_ji D_i + A_j, gamma initialised to 0.
Channel attention (sec. 3.3, Eq. 3-4): x_ji = softmax_i(A_i . A_j) over
channels (the official code subtracts each row's max first: softmax of
max - energy); E_j = beta * sum_i x_ji A_i + A_j, beta initialised to 0.
Each official module (junfu1115/DANet, PAM_Module and CAM_Module) is the
identity at initialisation; as one block gate the two are joined so that this
still holds: x + gamma P + beta C (the sum of both modules' outputs less one
copy of x; at gamma = beta = 0 the gate is the identity, as a block gate must
be). The N x N attention map makes
memory O(N^2): it is only allowed where H W <= ``max_tokens``.
Parameters: 2 (C^2/r + C/r) + C^2 + C + 2.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..kernels.conv import contiguous_keeping_grad_layout, in_layout_of
from ._base import AttentionModule, PaperPlacement
from ._checks import check_int


class DualAttention(AttentionModule):
    kind = "gate"
    #: published as a head on top of a backbone, not per block: the closest
    #: placement is after the last block, where resolution is lowest
    paper_placement = PaperPlacement(backbone=None, position="post", last_block_only=True)
    #: largest H*W the position attention may see (16 x 16): the N x N map of
    #: a 32 x 32 stage is 1M entries per image
    max_tokens = 256

    def __init__(self, channels: int, *, r: int = 8) -> None:
        super().__init__()
        check_int("danet", "r", r, 1, channels)
        self.query = nn.Conv2d(channels, channels // r, 1)
        self.key = nn.Conv2d(channels, channels // r, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))

    @classmethod
    def upgrade_state_format_1(cls, name: str, state: dict) -> bool:
        """Format 1 summed both official modules' outputs, x twice: what the
        rest of the block sees changed, which no conversion of the weights
        undoes."""
        return False

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        flat = contiguous_keeping_grad_layout(x).view(n, c, h * w)
        # position attention: (N x C/r) @ (C/r x N)
        energy = torch.bmm(self.query(x).flatten(2).transpose(1, 2), self.key(x).flatten(2))
        pos = torch.bmm(self.value(x).flatten(2), energy.softmax(-1).transpose(1, 2))
        # channel attention: (C x N) @ (N x C)
        energy_c = torch.bmm(flat, flat.transpose(1, 2))
        energy_c = energy_c.amax(-1, keepdim=True) - energy_c
        chan = torch.bmm(energy_c.softmax(-1), flat)
        return in_layout_of((self.gamma * pos + self.beta * chan).view(n, c, h, w), x) + x
