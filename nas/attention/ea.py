"""External attention (Guo et al., "Beyond Self-attention: External Attention
using Two Linear Layers", arXiv 2105.02358).

Two small learnable memories replace self-attention's keys and values
(Eq. 5-6): A = Norm(F M_k^T) with M_k: S x C, F_out = A M_v with M_v: C x S.
Norm is the double normalisation (Eq. 8): softmax over the N positions, then
l1 normalisation over the S memory slots. Cost is linear in N, so the module
is allowed where H W <= ``max_tokens``.

``wrapper`` chooses what surrounds the memories:

* ``"none"`` (default): the paper's equations alone, x + A M_v, with M_k and
  M_v initialised independently. Parameters: 2 C S.
* ``"official"``: the official module (MenghaoGuo/EANet, External_attention):
  a 1x1 conv C -> C with bias before the memories, a 1x1 conv C -> C without
  bias and a BN after them, the residual, then a ReLU:
  ReLU(x + BN(W_2 (Norm(M_k W_1 x) M_v))); M_v starts as M_k^T. Parameters:
  2 C S + 2 C^2 + 3 C. (The official code ties M_v to M_k by assigning a
  transposed view of M_k's storage, which keeps the two equal for the whole
  of training; here they are two parameters that start equal.)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import AttentionModule, PaperPlacement
from ._checks import check_choice, check_int

WRAPPERS = ("none", "official")


class ExternalAttention(AttentionModule):
    kind = "gate"
    #: published as a head on top of a backbone, not per block: the closest
    #: placement is after the last block, where resolution is lowest
    paper_placement = PaperPlacement(backbone=None, position="post", last_block_only=True)
    #: linear in N, but the N x S map still grows with resolution: up to 32 x 32
    max_tokens = 1024
    #: added after configs existed; at this value the module computes what it
    #: computed before, so structure hashes leave it out (see nas.model.config)
    legacy_defaults = {"wrapper": "none"}

    def __init__(self, channels: int, *, S: int = 64, wrapper: str = "none") -> None:
        super().__init__()
        check_int("ea", "S", S, 1)
        self.wrapper = check_choice("ea", "wrapper", wrapper, WRAPPERS)
        self.memory_key = nn.Linear(channels, S, bias=False)
        self.memory_value = nn.Linear(S, channels, bias=False)
        if wrapper == "official":
            self.conv_in = nn.Conv2d(channels, channels, 1)
            self.conv_out = nn.Conv2d(channels, channels, 1, bias=False)
            self.bn_out = nn.BatchNorm2d(channels)
            with torch.no_grad():
                self.memory_value.weight.copy_(self.memory_key.weight.t())

    def _memories(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # n x N x C
        attn = self.memory_key(tokens).softmax(dim=1)  # over positions
        attn = attn / (attn.sum(dim=2, keepdim=True) + 1e-9)  # l1 over memory slots
        return self.memory_value(attn).transpose(1, 2).reshape(n, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        if self.wrapper == "none":
            return x + self._memories(x)
        return torch.relu(x + self.bn_out(self.conv_out(self._memories(self.conv_in(x)))))
