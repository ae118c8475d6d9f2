"""Backbones: the presets match the published parameter counts, and every
attention position of design.md sec. 3 receives the right tensor."""
import pytest
import torch
import torchvision
from torch import nn

import nas
from nas.attention import _registry
from nas.model.config import POSITIONS, AttentionSpec
from nas.model.network import stage_feature_sizes


def _params(name, **kw):
    return nas.count_parameters(nas.build_model(nas.preset_config(name, **kw)))


@pytest.mark.parametrize("name,millions,digits", [
    # He et al. 2016 (arXiv 1512.03385), Table 6: 0.27M, 0.85M, 1.7M
    ("resnet20", 0.27, 2),
    ("resnet56", 0.85, 2),
    ("resnet110", 1.7, 1),
    # He et al. 2016b (arXiv 1603.05027), Table 2: ResNet-164 on CIFAR, 1.7M
    ("resnet164", 1.7, 1),
])
def test_cifar_resnet_param_counts_match_paper(name, millions, digits):
    assert round(_params(name) / 1e6, digits) == millions


@pytest.mark.parametrize("name,tv_fn", [
    ("resnet50", torchvision.models.resnet50),
    ("resnext50_32x4d", torchvision.models.resnext50_32x4d),
])
def test_imagenet_presets_equal_torchvision(name, tv_fn):
    torch.manual_seed(0)  # the input, not whatever ran before, decides the outcome
    ours = nas.build_model(nas.preset_config(name)).eval()
    ref = tv_fn().eval()
    assert nas.count_parameters(ours) == sum(p.numel() for p in ref.parameters())
    # parameter for parameter: torchvision's weights load strictly and give the same outputs
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features = ours.forward_features(x)
        expected_features = ref.layer4(ref.layer3(ref.layer2(ref.layer1(
            ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
        out, expected = ours(x), ref(x)
    # the same layers on the same kernels: the same features
    torch.testing.assert_close(features, expected_features)
    assert out.shape == expected.shape == (2, 1000)
    # The pooling differs in summation order (global_avg_pool sums, then
    # scales; torchvision's adaptive pool averages): on fp32 features of a
    # randomly initialised ResNet-50 (up to ~260) that moves logits of up to
    # ~85 by ~1e-5 (1.7e-5 seen on an AVX2-only EPYC), a few ulps, depending
    # on the CPU's vector width. So the tolerance scales with the logits: 1e-6
    # of the largest plus 1e-5 relative, several times the rounding seen and
    # orders of magnitude below any real mismatch of weights or layers.
    scale = expected.abs().max().item()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6 * scale)


def test_resnet50_count_is_the_known_figure():
    assert _params("resnet50") == 25_557_032


@pytest.mark.parametrize("name", ["resnet20", "resnet164"])
def test_cifar_forward_shape_and_feature_sizes(name):
    cfg = nas.preset_config(name, num_classes=100, width_multiplier=0.5)
    model = nas.build_model(cfg)
    x = torch.randn(3, 3, 32, 32)
    assert model(x).shape == (3, 100)
    assert model.forward_features(x).shape[-1] == stage_feature_sizes(cfg)[-1] == 8


def test_imagenet_feature_sizes():
    assert stage_feature_sizes(nas.preset_config("resnet50")) == [56, 28, 14, 7]


def test_width_multiplier_scales_widths():
    cfg = nas.preset_config("resnet20", width_multiplier=0.5)
    assert cfg.stem_width == 8 and [s.width for s in cfg.stages] == [8, 16, 32]
    assert _params("resnet20", width_multiplier=0.5) < _params("resnet20") / 3


def test_option_a_shortcut_has_no_parameters_and_pads_channels():
    model = nas.build_model(nas.preset_config("resnet20"))
    block = model.layer2[0]
    assert list(block.downsample.parameters()) == []
    y = block.downsample(torch.ones(1, 16, 8, 8))
    assert y.shape == (1, 32, 4, 4)
    assert y.sum() == 16 * 16  # the 16 original channels, subsampled; 16 zero channels


class _RecordingGate(nn.Module):
    """Test gate that records what it saw and scales by a learnable factor."""

    kind = "gate"
    calls: list = []

    def __init__(self, channels, *, scale=1.0):
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x):
        assert x.shape[1] == self.channels
        _RecordingGate.calls.append(tuple(x.shape))
        return x * self.weight.view(1, -1, 1, 1)


@pytest.fixture
def recording_gate(monkeypatch):
    monkeypatch.setitem(_registry._REGISTRY, "rec", _RecordingGate)
    _RecordingGate.calls = []
    return _RecordingGate


def _short(backbone, blocks_per_stage=2):
    """The preset with fewer blocks per stage: same wiring, faster tests."""
    cfg = nas.preset_config(backbone)
    for stage in cfg.stages:
        stage.blocks = stage.blocks[:blocks_per_stage]
    return cfg


@pytest.mark.parametrize("backbone,expected", [
    # (block type) -> channels each position sees in the first block of stage 2
    ("resnet20", {"pre": 16, "inner": 32, "standard": 32, "identity": 32, "post": 32}),
    ("resnet164", {"pre": 64, "inner": 32, "standard": 128, "identity": 128, "post": 128}),
])
@pytest.mark.parametrize("position", POSITIONS)
def test_every_position_gets_the_right_tensor(recording_gate, backbone, expected, position):
    cfg = _short(backbone)
    cfg.stages[1].blocks[0].attention = AttentionSpec("rec", position, {"scale": 0.0})
    model = nas.build_model(cfg)
    block = model.layer2[0]
    assert block.attention.channels == expected[position]
    x = torch.randn(2, 3, 32, 32)
    model(x)
    assert len(recording_gate.calls) == 1
    # a zero gate must change the output: the position is really on the data path
    base = nas.build_model(_short(backbone))
    base.load_state_dict(model.state_dict(), strict=False)
    model.eval(), base.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), base(x))


def test_attention_differs_per_block(recording_gate):
    cfg = nas.preset_config("resnet20")
    cfg.stages[0].blocks[1].attention = AttentionSpec("rec", "standard")
    cfg.stages[2].blocks[2].attention = AttentionSpec("rec", "pre")
    model = nas.build_model(cfg)
    model(torch.randn(1, 3, 32, 32))
    assert recording_gate.calls == [(1, 16, 32, 32), (1, 64, 8, 8)]
    gated = [name for name, m in model.named_modules() if isinstance(m, _RecordingGate)]
    assert gated == ["layer1.1.attention", "layer3.2.attention"]


def test_module_rejection_names_the_block(recording_gate):
    cfg = nas.preset_config("resnet20")
    cfg.stages[1].blocks[2].attention = AttentionSpec("rec", "standard", {"bogus": 3})
    with pytest.raises(nas.ConfigError, match=r"stages\[1\]\.blocks\[2\]\.attention: .*bogus"):
        nas.build_model(cfg)


def test_zero_init_residual_makes_blocks_identity_on_the_residual_branch():
    model = nas.build_model(nas.preset_config("resnet20")).eval()
    model.zero_init_residual()
    block = model.layer1[0]
    x = torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_provenance_reads_torchvision_version_without_importing_it():
    """Every new study records the versions; importing torchvision for its
    version took seconds per process."""
    import subprocess
    import sys

    code = ("import sys; from nas.provenance import versions; v = versions(); "
            "print(v['torchvision'], 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [torchvision.__version__, "False"]
