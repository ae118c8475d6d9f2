"""Selective Kernel convolution (Li et al., "Selective Kernel Networks",
arXiv 1903.06586). Replaces a block's 3x3 conv unit.

Split (sec. 3.1): M branches of 3x3 group convs (G groups) with dilation
d_m = (k_m - 1) / 2, so kernel k_m = 3, 5, 7, ... is realised as a dilated
3x3, each followed by BN and ReLU. Fuse (Eq. 1-3): U = sum_m U_m,
s = GAP(U), z = ReLU(BN(W s)) with W: C -> d, d = max(C / r, L).
Select (Eq. 5-6): a_m = softmax over m of (A_m z), A_m: d -> C, per channel;
V = sum_m a_m * U_m. Defaults M = 2, G = 32, r = 16, L = 32.
Parameters: M (9 C_in C / G + 2 C) + C d + 2 d + M d C.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.conv import conv2d
from ..kernels.pool import global_avg_pool
from ._base import AttentionModule, PaperPlacement, StageFacts, largest_divisor
from ._checks import check_divides, check_int, check_int_list, check_odd


class SKConv(AttentionModule):
    kind = "conv"
    paper_placement = PaperPlacement(backbone="resnext50_32x4d", stride_on="3x3")

    @classmethod
    def fit_to_stage(cls, defaults: dict, overrides: dict, stage: StageFacts) -> dict:
        """G cut to the largest divisor of the conv's channels not above the paper's."""
        if "G" in overrides:
            return {}
        return {"G": largest_divisor(stage.mid, defaults["G"])}

    @classmethod
    def list_length(cls, name: str, values: dict, defaults: dict) -> int:
        """One kernel per branch: M of them."""
        if name == "kernels":
            return values.get("M", defaults["M"])
        return super().list_length(name, values, defaults)

    def __init__(self, channels: int, *, out_channels: int | None = None, stride: int = 1, M: int = 2,
                 G: int = 32, r: int = 16, L: int = 32, kernels: list[int] | None = None) -> None:
        super().__init__()
        out = channels if out_channels is None else out_channels
        check_int("sk", "M", M, 1)
        check_divides("sk", "G", G, channels, "input channels")
        check_divides("sk", "G", G, out, "output channels")
        check_int("sk", "r", r, 1, out)
        check_int("sk", "L", L, 1)
        kernels = [3 + 2 * m for m in range(M)] if kernels is None else check_int_list("sk", "kernels", kernels, M)
        for k in kernels:
            check_odd("sk", "kernels", k, 3)
        self.kernels = kernels
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, out, 3, stride=stride, padding=(k - 1) // 2, dilation=(k - 1) // 2,
                          groups=G, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            )
            for k in kernels
        )
        d = max(out // r, L)
        self.fc = nn.Conv2d(out, d, 1, bias=False)
        self.fc_bn = nn.BatchNorm2d(d)
        # the M FCs A_m stacked into one conv; no bias, as in the official SKNet
        self.select = nn.Conv2d(d, out * M, 1, bias=False)
        self.M = M

    def forward(self, x: Tensor) -> Tensor:
        # Eq. 1-6 on the list of branch outputs: no stacked n x M x C x H x W
        # tensor, whose copies and sums over the branch axis cost more than
        # the arithmetic (channels_last CPU training: 1.2-1.6x the module's time)
        feats = [F.relu(branch[1](conv2d(x, branch[0])), inplace=True) for branch in self.branches]
        fused = feats[0]
        for feat in feats[1:]:
            fused = fused + feat
        z = F.relu(self.fc_bn(self.fc(global_avg_pool(fused))))
        n, c = fused.shape[:2]
        weights = self.select(z).view(n, self.M, c, 1, 1).softmax(dim=1).unbind(1)
        out = feats[0] * weights[0]
        for feat, weight in zip(feats[1:], weights[1:]):
            out = out + feat * weight
        return out
