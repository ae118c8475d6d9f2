"""External attention (Guo et al., "Beyond Self-attention: External Attention
using Two Linear Layers", arXiv 2105.02358).

Two small learnable memories replace self-attention's keys and values
(Eq. 5-6): A = Norm(F M_k^T) with M_k: S x C, F_out = A M_v with M_v: C x S.
Norm is the double normalisation (Eq. 8): softmax over the N positions, then
l1 normalisation over the S memory slots. A residual connection keeps the
input. Cost is linear in N, so the module is allowed where H W <=
``max_tokens``. Parameters: 2 C S.
"""
from __future__ import annotations

from torch import Tensor, nn

from ._checks import check_int


class ExternalAttention(nn.Module):
    kind = "gate"
    #: linear in N, but the N x S map still grows with resolution: up to 32 x 32
    max_tokens = 1024

    def __init__(self, channels: int, *, S: int = 64) -> None:
        super().__init__()
        check_int("ea", "S", S, 1)
        self.memory_key = nn.Linear(channels, S, bias=False)
        self.memory_value = nn.Linear(S, channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # n x N x C
        attn = self.memory_key(tokens).softmax(dim=1)  # over positions
        attn = attn / (attn.sum(dim=2, keepdim=True) + 1e-9)  # l1 over memory slots
        return x + self.memory_value(attn).transpose(1, 2).reshape(n, c, h, w)
