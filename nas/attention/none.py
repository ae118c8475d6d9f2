"""The no-attention baseline: the identity, with no parameters and no cost."""
from torch import Tensor

from ._base import AttentionModule


class NoAttention(AttentionModule):
    """Identity gate, so that "no attention" is a registry entry like any other."""

    kind = "gate"

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return x
