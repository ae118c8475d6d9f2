"""The cost profiler: MACs equal the closed form for conv and linear layers,
attention's element-wise work is a separate, exact figure."""
import pytest
from torch import nn

import nas
from nas.attention import create_attention


def _macs(module, shape):
    return nas.profile(module, shape)["macs"]


@pytest.mark.parametrize("conv,shape,expected", [
    # Cout * H' * W' * (Cin / groups) * k * k
    (nn.Conv2d(16, 32, 3, padding=1), (16, 10, 10), 32 * 10 * 10 * 16 * 9),
    (nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), (16, 10, 10), 32 * 5 * 5 * 16 * 9),
    (nn.Conv2d(16, 32, 3, padding=1, groups=4), (16, 10, 10), 32 * 10 * 10 * 4 * 9),
    (nn.Conv2d(16, 32, 3, padding=2, dilation=2), (16, 10, 10), 32 * 10 * 10 * 16 * 9),
    (nn.Conv2d(16, 16, 5, padding=2, groups=16), (16, 10, 10), 16 * 10 * 10 * 1 * 25),
    (nn.Conv2d(16, 8, 1), (16, 7, 9), 8 * 7 * 9 * 16),
    (nn.Conv1d(1, 1, 5, padding=2, bias=False), (1, 64), 64 * 5),
])
def test_conv_macs_equal_closed_form(conv, shape, expected):
    assert _macs(conv, shape) == expected


def test_linear_macs_equal_closed_form():
    assert _macs(nn.Linear(100, 30), (100,)) == 100 * 30
    assert _macs(nn.Sequential(nn.Flatten(), nn.Linear(48, 10)), (3, 4, 4)) == 480


def test_resnet20_macs_and_params():
    cost = nas.profile(nas.build_model(nas.preset_config("resnet20")), 32)
    # convs: stem + 3 stages; fc 64 x 10; no attention -> no element-wise figure
    assert cost["macs"] == 40_551_040
    assert cost["params"] == 269_722
    assert cost["elementwise"] == 0


class _Wrap(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.attention = inner

    def forward(self, x):
        return self.attention(x)


def test_attention_macs_in_main_figure_elementwise_separate():
    C, H, r = 64, 8, 16
    cost = nas.profile(_Wrap(create_attention("se", C, r=r)), (C, H, H))
    h = C // r
    assert cost["macs"] == C * h + h * C  # the two FCs (bias adds are not MACs)
    # average pool: sum over C*H*W inputs and C divisions; ReLU on h, sigmoid on C, scale C*H*W
    assert cost["elementwise"] == C * H * H + C + h + C + C * H * H
    assert cost["params"] == 2 * C * h + h + C


def test_softmax_counts_three_operations_per_element():
    C, H, S = 16, 4, 8
    cost = nas.profile(_Wrap(create_attention("ea", C, S=S)), (C, H, H))
    N = H * H
    assert cost["macs"] == N * C * S * 2
    # softmax 3*N*S, l1 sum N*S, add eps N, divide N*S, residual add N*C
    assert cost["elementwise"] == 3 * N * S + N * S + N + N * S + N * C


def test_profile_restores_mode_and_measures_latency():
    model = nas.build_model(nas.preset_config("resnet20", width_multiplier=0.25)).train()
    cost = nas.profile(model, 32, latency=True, batch_size=4, repeats=3)
    assert model.training
    assert cost["latency_ms"] > 0
