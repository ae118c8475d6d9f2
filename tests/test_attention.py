"""The attention zoo: shapes, gradients, closed-form parameter counts from
the papers' definitions, argument checks, and placement in the backbones."""

import pytest
import torch
from torch import nn

import nas
from nas.attention import attention_kind, attention_names, create_attention
from nas.attention.eca import adaptive_kernel_size


# ---- closed-form parameter counts (design.md sec. 4), C = channels
def se_params(C, r=16, **_):
    return 2 * C * (C // r) + C // r + C


def eca_params(C, k_size=None, **_):
    return adaptive_kernel_size(C) if k_size is None else k_size


def cbam_params(C, r=16, spatial_kernel=7, **_):
    return se_params(C, r) + 2 * spatial_kernel ** 2 + 2  # conv 2->1 without bias, BN(1)


def bam_params(C, r=16, num_dilated=2, **_):
    h = C // r
    channel = C * h + h + 2 * h + h * C + C
    spatial = C * h + h + 2 * h + num_dilated * (9 * h * h + h + 2 * h) + h + 1
    return channel + spatial


def sa_params(C, groups=64, **_):
    return 6 * C // (2 * groups)


def danet_params(C, r=8, **_):
    return 2 * (C * (C // r) + C // r) + C * C + C + 2


def ea_params(C, S=64, wrapper="none", **_):
    # the official wrapper: 1x1 conv with bias before, 1x1 conv without bias + BN after
    return 2 * C * S + (2 * C * C + 3 * C if wrapper == "official" else 0)


def sk_params(C, out, M=2, G=32, r=16, L=32, **_):
    d = max(out // r, L)
    return M * (9 * C * out // G + 2 * out) + out * d + 2 * d + M * d * out


def psa_params(C, out, kernels=(3, 5, 7, 9), groups=(1, 4, 8, 16), r=16, **_):
    split = out // len(kernels)
    convs = sum(k * k * C * split // g for k, g in zip(kernels, groups))
    se = 2 * split * (split // r) + split // r + split
    return convs + se + 2 * out


def sc_params(C, out, groups=1, **_):
    a, b = C // 2, out // 2  # K1, K4: a -> b with the stride; K2, K3: a -> a; a BN after each
    return 2 * (9 * a * b // groups + 2 * b) + 2 * (9 * a * a // groups + 2 * a)


def emsa_params(C, heads=1, sr=1, qkv_bias=True, **_):
    # ResT's Attention (q, kv, proj; sr conv + LayerNorm; transform conv) plus
    # the LayerNorm its Block puts before it
    attention = 3 * C * C + (3 * C if qkv_bias else 0) + C * C + C
    if sr > 1:
        attention += C * (sr + 1) ** 2 + C + 2 * C
    if heads > 1:
        attention += heads * heads + heads
    return 2 * C + attention


GATES = {
    "se": (se_params, [{}, {"r": 4}, {"r": 8, "squeeze": "max", "gate": "hard_sigmoid"}]),
    "eca": (eca_params, [{}, {"k_size": 5}, {"k_size": 9}]),
    "cbam": (cbam_params, [{}, {"r": 8}, {"r": 4, "spatial_kernel": 3}]),
    "sa": (sa_params, [{"groups": 4}, {"groups": 8}, {"groups": 16}]),
    "danet": (danet_params, [{}, {"r": 4}, {"r": 16}]),
    "ea": (ea_params, [{}, {"S": 16}, {"S": 128}, {"wrapper": "official"}, {"S": 16, "wrapper": "official"}]),
    "bam": (bam_params, [{}, {"r": 4}, {"r": 8, "num_dilated": 1, "dilation": 2}, {"combine": "product"}]),
    "emsa": (emsa_params, [{}, {"heads": 4, "sr": 2}, {"heads": 2, "sr": 4, "qkv_bias": False}, {"sr": 3}]),
}
# parameters no loss can move, in the official modules too: a per-head bias
# added before a softmax over the keys (EMSA's transform conv) cancels out
_DEAD_BY_DESIGN = {"attention.transform.bias"}
CONVS = {
    "sk": (sk_params, [{"G": 8}, {"M": 3, "G": 16, "r": 8, "L": 16}, {"M": 2, "G": 1, "kernels": [3, 7]}]),
    "psa": (psa_params, [{"groups": [1, 2, 4, 8]}, {"kernels": [3, 5], "groups": [1, 2], "r": 4},
                         {"kernels": [3, 5, 7, 9], "groups": [1, 1, 1, 1], "r": 2}]),
    "sc": (sc_params, [{}, {"r": 2}, {"r": 8, "upsample": "bilinear"}, {"groups": 8}]),
}


def test_registry_holds_every_module_of_the_design():
    assert attention_names() == ["none", "bam", "cbam", "danet", "ea", "eca", "emsa", "psa", "sa", "sc", "se", "sk"]
    assert {n: attention_kind(n) for n in ("sk", "psa", "sc", "bam", "se", "emsa")} == {
        "sk": "conv", "psa": "conv", "sc": "conv", "bam": "transition", "se": "gate", "emsa": "gate"}


def _randomise(module):
    # zero-initialised scales (DANet's gamma, SA's weights) would hide
    # gradients of what they multiply; any non-degenerate values will do
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)


def _check_gradients(module, y):
    (y * torch.randn_like(y)).sum().backward()
    for name, p in module.named_parameters():
        if name in _DEAD_BY_DESIGN:
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


@pytest.mark.parametrize("name", sorted(GATES))
@pytest.mark.parametrize("channels", [64, 128, 256])
def test_gate_modules_shape_gradients_and_parameter_count(name, channels):
    formula, settings = GATES[name]
    for kwargs in settings:
        m = create_attention(name, channels, **kwargs)
        assert sum(p.numel() for p in m.parameters()) == formula(channels, **kwargs), kwargs
        _randomise(m)
        x = torch.randn(4, channels, 8, 8, requires_grad=True)
        y = m(x)
        assert y.shape == x.shape
        _check_gradients(m, y)
        assert x.grad is not None


@pytest.mark.parametrize("name", sorted(CONVS))
@pytest.mark.parametrize("channels,out,stride", [(64, 64, 1), (64, 128, 2), (128, 128, 2)])
def test_conv_modules_shape_gradients_and_parameter_count(name, channels, out, stride):
    formula, settings = CONVS[name]
    for kwargs in settings:
        m = create_attention(name, channels, out_channels=out, stride=stride, **kwargs)
        assert sum(p.numel() for p in m.parameters()) == formula(channels, out, **kwargs), kwargs
        _randomise(m)
        x = torch.randn(4, channels, 16, 16)
        y = m(x)
        assert y.shape == (4, out, 16 // stride, 16 // stride)
        _check_gradients(m, y)


def test_eca_adaptive_kernel_follows_eq_12():
    # k = |(log2 C + 1) / 2| to the odd: C = 64 -> 3.5 -> 3; 256 -> 4.5 -> 5; 512 -> 5; 2048 -> 6 -> 7
    assert [adaptive_kernel_size(c) for c in (64, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 7]
    assert create_attention("eca", 2048).k_size == 7


def test_sk_branches_are_dilated_3x3():
    m = create_attention("sk", 64, out_channels=64, M=3, G=8)
    convs = [b[0] for b in m.branches]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3
    assert [c.dilation for c in convs] == [(1, 1), (2, 2), (3, 3)]
    assert all(c.groups == 8 for c in convs)


def test_danet_gate_starts_as_the_identity():
    # each official module (PAM, CAM) is the identity at init; so is the gate
    torch.manual_seed(0)
    x = torch.randn(2, 32, 4, 4)
    m = create_attention("danet", 32)
    torch.testing.assert_close(m(x), x, rtol=0, atol=0)  # gamma = beta = 0
    with torch.no_grad():
        m.gamma.fill_(0.5)
    assert not torch.allclose(m(x), x)  # and it is not the identity once gamma moves


# ---- what the official code computes (hand-computed cases)
def _bn_identity_scale(bn):
    """An eval-mode BN with fresh running stats divides by sqrt(1 + eps)."""
    return 1 / (1 + bn.eps) ** 0.5


def test_bam_combines_branches_by_sum_or_product():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 6, 6)
    for combine in ("sum", "product"):
        m = create_attention("bam", 32, r=4, combine=combine).eval()
        _randomise(m)
        with torch.no_grad():
            channel = m.channel_gate(x.mean((2, 3), keepdim=True))  # C x 1 x 1
            spatial = m.spatial_gate(x)  # 1 x H x W
            expected = (x * (1 + torch.sigmoid(channel + spatial)) if combine == "sum"  # paper, Eq. 1-2
                        else x * (1 + torch.sigmoid(channel * spatial)))  # official code
            torch.testing.assert_close(m(x), expected)
    with pytest.raises(ValueError, match="bam: combine must be one of sum, product, got 'max'"):
        create_attention("bam", 32, combine="max")


def test_paper_config_builds_bam_as_the_official_code_trained_it():
    cfg = nas.paper_config("resnet50", "bam")
    assert [s.transition.params["combine"] for s in cfg.stages[:3]] == ["product"] * 3
    model = nas.build_model(cfg)
    assert {m.combine for m in model.modules() if type(m).__name__ == "BAM"} == {"product"}
    assert nas.paper_config("resnet50", "bam", combine="sum").stages[0].transition.params["combine"] == "sum"


def test_cbam_spatial_gate_stacks_max_then_mean_with_bn_momentum_001():
    m = create_attention("cbam", 16, r=4).eval()
    assert m.spatial_bn.momentum == 0.01  # official BasicConv's BN
    with torch.no_grad():
        nn.init.zeros_(m.fc2.weight)
        nn.init.zeros_(m.fc2.bias)  # channel gate: sigmoid(0 + 0) = 1/2 everywhere
        m.spatial.weight.zero_()
        m.spatial.weight[0, 0, 3, 3] = 1.0  # input map 0 passes through, map 1 is ignored
    torch.manual_seed(0)
    x = torch.randn(2, 16, 5, 5)
    half = x / 2
    expected = half * torch.sigmoid(half.amax(1, keepdim=True) * _bn_identity_scale(m.spatial_bn))
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected)  # map 0 is the channel max, not the mean


def test_psa_concatenates_parts_last_first_as_the_official_code():
    m = create_attention("psa", 16, out_channels=16, kernels=[3, 5], groups=[1, 2], r=2).eval()
    _randomise(m)
    with torch.no_grad():
        nn.init.zeros_(m.se_fc2.weight)
        nn.init.zeros_(m.se_fc2.bias)  # equal SE logits: softmax gives each of the 2 parts 1/2
        m.bn.reset_parameters()
        m.bn.reset_running_stats()
        torch.manual_seed(0)
        x = torch.randn(2, 16, 6, 6)
        parts = [conv(x) / 2 for conv in m.convs]
        expected = torch.relu(torch.cat(parts[::-1], 1) * _bn_identity_scale(m.bn))
        torch.testing.assert_close(m(x), expected)


def test_ea_official_wrapper():
    torch.manual_seed(0)
    m = create_attention("ea", 16, S=8, wrapper="official").eval()
    torch.testing.assert_close(m.memory_value.weight, m.memory_key.weight.t())  # M_v = M_k^T at init
    _randomise(m)
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        inner = m.conv_in(x)
        attn = torch.einsum("ncp,sc->nsp", inner.flatten(2), m.memory_key.weight).softmax(-1)  # over positions
        attn = attn / attn.sum(1, keepdim=True)  # l1 over the S slots
        mem = torch.einsum("nsp,cs->ncp", attn, m.memory_value.weight).view_as(x)
        expected = torch.relu(x + m.bn_out(m.conv_out(mem)))
        torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)
    bare = create_attention("ea", 16, S=8)
    assert not hasattr(bare, "conv_in")
    with pytest.raises(ValueError, match="ea: wrapper must be one of none, official, got 'yes'"):
        create_attention("ea", 16, wrapper="yes")


def test_options_added_later_keep_earlier_structure_hashes():
    # hashes computed by the code before `combine` and `wrapper` existed
    assert nas.paper_config("resnet20", "bam", combine="sum").structure_hash() == "10513fc98f1606ba"
    ea = nas.preset_config("resnet20")
    ea.stages[2].blocks[2].attention = nas.AttentionSpec("ea", "post", {"S": 32})
    assert ea.structure_hash() == "7420e9499b6ee140"
    ea.stages[2].blocks[2].attention.params["wrapper"] = "none"  # the same module, written out
    assert ea.structure_hash() == "7420e9499b6ee140"
    ea.stages[2].blocks[2].attention.params["wrapper"] = "official"  # another module: another hash
    assert ea.structure_hash() != "7420e9499b6ee140"
    assert nas.paper_config("resnet20", "bam").structure_hash() != "10513fc98f1606ba"  # product


def test_sk_select_is_softmax_over_branches():
    m = create_attention("sk", 32, out_channels=32, M=2, G=4).eval()
    _randomise(m)
    with torch.no_grad():
        nn.init.zeros_(m.select.weight)  # equal logits -> each branch weighted 1/2
        x = torch.randn(1, 32, 8, 8)
        expected = sum(b(x) for b in m.branches) / 2
        torch.testing.assert_close(m(x), expected)


BAD = [
    ("se", 8, {"r": 16}, "se: r must be an integer in [1, 8], got 16"),
    ("se", 64, {"squeeze": "median"}, "se: squeeze must be one of avg, max"),
    ("se", 64, {"gate": "tanh"}, "se: gate must be one of sigmoid, hard_sigmoid"),
    ("cbam", 64, {"r": 65}, "cbam: r must be an integer in [1, 64]"),
    ("cbam", 64, {"spatial_kernel": 4}, "cbam: spatial_kernel must be one of 3, 5, 7, got 4"),
    ("eca", 64, {"k_size": 4}, "eca: k_size must be an odd kernel size"),
    ("sa", 64, {"groups": 5}, "sa: groups=5 must divide C/2=32; allowed: 1, 2, 4, 8, 16, 32"),
    ("sa", 64, {"groups": 0}, "sa: groups must be an integer >= 1, got 0"),
    ("sk", 48, {"G": 32}, "sk: G=32 must divide input channels=48; allowed: 1, 2, 3, 4, 6, 8, 12, 16, 24, 48"),
    ("sk", 64, {"M": 0}, "sk: M must be an integer >= 1, got 0"),
    ("sk", 64, {"kernels": [3, 4]}, "sk: kernels must be an odd kernel size >= 3, got 4"),
    ("sk", 64, {"M": 3, "kernels": [3, 5]}, "sk: kernels must have 3 entries, got 2"),
    ("sk", 64, {"r": 128}, "sk: r must be an integer in [1, 64]"),
    ("psa", 64, {"kernels": [3, 6, 7, 9]}, "psa: kernels must be an odd kernel size"),
    ("psa", 64, {"groups": [1, 4, 8, 32]}, "psa: groups=32 must divide output channels / len(kernels)=16"),
    ("psa", 64, {"kernels": [3, 5, 7]}, "psa: groups must have 3 entries, got 4"),
    ("bam", 8, {"r": 16}, "bam: r must be an integer in [1, 8]"),
    ("danet", 8, {"r": 16}, "danet: r must be an integer in [1, 8]"),
    ("ea", 64, {"S": 0}, "ea: S must be an integer >= 1, got 0"),
    ("sc", 63, {}, "sc: input channels must be even (split between the two paths), got 63"),
    ("sc", 64, {"r": 0}, "sc: r must be an integer >= 1, got 0"),
    ("sc", 64, {"groups": 3}, "sc: groups=3 must divide input channels / 2=32"),
    ("sc", 64, {"upsample": "cubic"}, "sc: upsample must be one of nearest, bilinear, got 'cubic'"),
    ("emsa", 64, {"heads": 3}, "emsa: heads=3 must divide channels=64; allowed: 1, 2, 4, 8, 16, 32, 64"),
    ("emsa", 64, {"sr": 0}, "emsa: sr must be an integer >= 1, got 0"),
    ("emsa", 64, {"qkv_bias": 1}, "emsa: qkv_bias must be true or false, got 1"),
    ("se", 64, {"k": 3}, "unknown parameter 'k' for attention 'se'; allowed: gate, r, squeeze"),
]


@pytest.mark.parametrize("name,channels,kwargs,message", BAD)
def test_invalid_hyperparameters_raise_value_error_naming_them(name, channels, kwargs, message):
    extra = {"out_channels": channels} if attention_kind(name) == "conv" else {}
    with pytest.raises(ValueError) as info:
        create_attention(name, channels, **extra, **kwargs)
    assert message in str(info.value)


def test_unknown_module_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown attention type 'xyz'; allowed: none, bam, cbam"):
        create_attention("xyz", 64)


# ---- placement in the backbones
@pytest.mark.parametrize("name", [n for n in attention_names() if n != "none"])
def test_every_module_trains_inside_resnet20(name):
    cfg = nas.paper_config("resnet20", name)
    model = nas.build_model(cfg)
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    out.sum().backward()
    assert nas.count_parameters(model) != nas.count_parameters(nas.build_model(nas.preset_config("resnet20")))


def test_conv_modules_replace_the_3x3_unit():
    model = nas.build_model(nas.paper_config("resnet50", "psa"))
    block = model.layer2[0]
    assert type(block.conv2).__name__ == "PSAConv" and isinstance(block.bn2, nn.Identity)
    model = nas.build_model(nas.paper_config("resnet20", "sk"))
    assert type(model.layer1[0].conv1).__name__ == "SKConv" and model.layer1[0].attention is None


def test_bam_sits_at_stage_transitions_only():
    model = nas.build_model(nas.paper_config("resnet50", "bam"))
    bams = [n for n, m in model.named_modules() if type(m).__name__ == "BAM"]
    assert bams == ["transition1", "transition2", "transition3"]
    cfg = nas.preset_config("resnet20")
    cfg.stages[0].blocks[0].attention = nas.AttentionSpec("bam")
    with pytest.raises(nas.ConfigError, match=r"stages\[0\]\.blocks\[0\]\.attention: 'bam' is a stage-transition"):
        nas.build_model(cfg)


@pytest.mark.parametrize("name,stage,ok", [
    ("danet", 0, False),  # 32x32 = 1024 positions > 256
    ("danet", 1, True),   # 16x16 = 256
    ("ea", 0, True),      # linear in N: 1024 allowed
])
def test_quadratic_attention_only_at_low_resolution(name, stage, ok):
    cfg = nas.preset_config("resnet20")
    cfg.stages[stage].blocks[1].attention = nas.AttentionSpec(name, "standard")
    if ok:
        nas.build_model(cfg)
    else:
        with pytest.raises(nas.ConfigError, match=rf"stages\[{stage}\]\.blocks\[1\]\.attention: danet needs H\*W <= 256 but sees a 32x32 map"):
            nas.build_model(cfg)
    big = nas.preset_config("resnet50")
    big.stages[0].blocks[0].attention = nas.AttentionSpec("ea", "standard")
    with pytest.raises(nas.ConfigError, match="ea needs H\\*W <= 1024 but sees a 56x56 map"):
        nas.build_model(big)


def test_paper_config_places_modules_and_applies_overrides():
    cfg = nas.paper_config("resnet20", "cbam", r=8)
    specs = [b.attention for _, _, b in cfg.blocks()]
    assert len(specs) == 9 and all(s.type == "cbam" and s.position == "standard" and s.params == {"r": 8}
                                   for s in specs)
    eca = nas.paper_config("resnet50", "eca")
    assert [s.blocks[0].attention.params["k_size"] for s in eca.stages] == [3, 5, 5, 7]
    assert nas.paper_config("resnet50", "se").stride_on == "1x1"
    assert nas.paper_config("resnet50", "se", stride_on="3x3").stride_on == "3x3"
    # the config is an ordinary one: YAML round trip and rebuild
    assert nas.ArchConfig.from_yaml(cfg.to_yaml()) == cfg
    with pytest.raises(nas.ConfigError, match="'L' is not a parameter of cbam; allowed: r, spatial_kernel"):
        nas.paper_config("resnet20", "cbam", L=3)


def test_paper_config_fits_group_counts_to_small_stages():
    cfg = nas.paper_config("resnet20", "sa")
    assert [s.blocks[0].attention.params["groups"] for s in cfg.stages] == [8, 16, 32]
