"""SCNet's self-calibrated conv and ResT's EMSA compute what the official
modules compute (hand-written cases), refuse maps they do not fit with an
error naming the parameter, and the parameters a space samples reach them."""
import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.attention import create_attention
from nas.search.space import load_space


def _randomise(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)


# ---- SC: Eq. 1-4 and the official SCBottleneck's two paths


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("stride", [1, 2])
def test_sc_is_k1_path_beside_the_self_calibrated_path(upsample, stride):
    m = create_attention("sc", 16, out_channels=32, stride=stride, r=4, upsample=upsample).eval()
    _randomise(m)
    torch.manual_seed(1)
    x = torch.randn(2, 16, 12, 12)
    x1, x2 = x[:, :8], x[:, 8:]

    def conv_bn(seq, t):
        conv, bn = seq
        return F.batch_norm(F.conv2d(t, conv.weight, stride=conv.stride, padding=1), bn.running_mean,
                            bn.running_var, bn.weight, bn.bias, eps=bn.eps)

    with torch.no_grad():
        y1 = torch.relu(conv_bn(m.k1, x1))
        t = conv_bn(m.k2, F.avg_pool2d(x2, 4))  # Eq. 1-2: 12x12 -> 3x3
        assert t.shape[-2:] == (3, 3)
        if upsample == "nearest":  # each pooled cell back over its own 4 x 4 window
            up = t.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
        else:
            up = F.interpolate(t, size=(12, 12), mode="bilinear", align_corners=False)
        y2 = torch.relu(conv_bn(m.k4, conv_bn(m.k3, x2) * torch.sigmoid(x2 + up)))  # Eq. 3-4
        expected = torch.cat([y1, y2], 1)
        torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)
    assert expected.shape == (2, 32, 12 // stride, 12 // stride)


def test_sc_upsampling_modes_differ():
    m = create_attention("sc", 8, r=2).eval()
    _randomise(m)
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        nearest = m(x)
        m.upsample = "bilinear"
        assert not torch.allclose(nearest, m(x))


def test_sc_replaces_the_bottleneck_3x3_as_scnet_does():
    model = nas.build_model(nas.paper_config("resnet50", "sc"))
    block = model.layer2[0]  # 256 -> 1x1 -> 128 -> SC (stride 2) -> 1x1 -> 512
    assert type(block.conv2).__name__ == "SCConv" and isinstance(block.bn2, nn.Identity)
    assert block.conv1.out_channels == 128 and block.conv3.in_channels == 128
    assert [block.conv2.k1[0].stride, block.conv2.k4[0].stride] == [(2, 2), (2, 2)]
    assert block.conv2.k3[0].stride == (1, 1) and block.conv2.r == 4
    out = model.layer2(torch.randn(1, 256, 16, 16))
    assert out.shape == (1, 512, 8, 8)


def test_sc_takes_resnext_cardinality_as_the_official_code():
    cfg = nas.paper_config("resnext50_32x4d", "sc")
    assert {b.attention.params["groups"] for _, _, b in cfg.blocks()} == {32}
    unit = nas.build_model(cfg).layer1[0].conv2  # 128-wide 3x3 unit: halves of 64, 32 groups of 2
    assert {k[0].groups for k in (unit.k1, unit.k2, unit.k3, unit.k4)} == {32}
    assert "groups" not in nas.paper_config("resnet50", "sc").stages[0].blocks[0].attention.params


# ---- EMSA: ResT's Attention inside x + EMSA(LN(x))


def test_emsa_single_head_without_reduction_is_softmax_self_attention():
    torch.manual_seed(0)
    m = create_attention("emsa", 8, heads=1, sr=1).eval()
    _randomise(m)
    x = torch.randn(2, 8, 3, 4)
    att = m.attention
    with torch.no_grad():
        expected = torch.empty_like(x)
        for i in range(2):
            tokens = x[i].reshape(8, 12).t()  # 12 positions x 8 channels, row-major over H, W
            z = F.layer_norm(tokens, (8,), m.norm.weight, m.norm.bias, m.norm.eps)
            q = z @ att.q.weight.t() + att.q.bias
            kv = z @ att.kv.weight.t() + att.kv.bias
            k, v = kv[:, :8], kv[:, 8:]
            weights = torch.exp(q @ k.t() / 8 ** 0.5)
            weights = weights / weights.sum(1, keepdim=True)
            out = (weights @ v) @ att.proj.weight.t() + att.proj.bias
            expected[i] = x[i] + out.t().reshape(8, 3, 4)
        torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)
    assert not hasattr(att, "transform") and not hasattr(att, "reduce")


def test_emsa_transform_is_conv_then_softmax_then_instance_norm():
    torch.manual_seed(0)
    m = create_attention("emsa", 4, heads=2, sr=1).eval()
    _randomise(m)
    att = m.attention
    with torch.no_grad():
        att.transform.weight.copy_(torch.tensor([[0.5, 1.0], [-0.3, 0.8]]).view(2, 2, 1, 1))  # mixes the heads
        att.transform.bias.copy_(torch.tensor([0.3, -0.2]))
        att.proj.weight.copy_(torch.eye(4))
        att.proj.bias.zero_()
    x = torch.randn(2, 4, 2, 3)  # two images: the mixing must not cross them
    with torch.no_grad():
        out = m(x) - x
    for i in range(2):
        with torch.no_grad():
            z = F.layer_norm(x[i].reshape(4, 6).t(), (4,), m.norm.weight, m.norm.bias, m.norm.eps)
            q = z @ att.q.weight.t() + att.q.bias
            kv = z @ att.kv.weight.t() + att.kv.bias
            k, v = kv[:, :4], kv[:, 4:]
            logits = [q[:, 2 * h:2 * h + 2] @ k[:, 2 * h:2 * h + 2].t() / 2 ** 0.5 for h in range(2)]  # 6 x 6 each

            def instance_norm(a):
                return (a - a.mean()) / (a.var(unbiased=False) + 1e-5) ** 0.5

            def heads_out(maps):
                return torch.cat([maps[h] @ v[:, 2 * h:2 * h + 2] for h in range(2)], 1)

            def mix(a, b):  # out_0 = 0.5 a + b + 0.3, out_1 = -0.3 a + 0.8 b - 0.2 (not symmetric)
                return [0.5 * a + b + 0.3, -0.3 * a + 0.8 * b - 0.2]

            conv = mix(*logits)
            expected = heads_out([instance_norm(c.softmax(-1)) for c in conv])  # ResT: conv, softmax, IN
            got = out[i].reshape(4, 6).t()
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
            # any other order gives another answer on this case
            softmax_first = heads_out([instance_norm(c) for c in mix(logits[0].softmax(-1), logits[1].softmax(-1))])
            norm_first = heads_out([instance_norm(c).softmax(-1) for c in conv])
            assert not torch.allclose(got, softmax_first, atol=1e-3) and not torch.allclose(got, norm_first, atol=1e-3)


@pytest.mark.parametrize("side,sr,reduced", [(32, 4, 8), (32, 8, 4), (16, 2, 8), (8, 3, 3), (7, 2, 4)])
def test_emsa_reduces_keys_with_resT_depthwise_conv(side, sr, reduced):
    m = create_attention("emsa", 16, heads=2, sr=sr)
    conv = m.attention.reduce
    assert (conv.kernel_size, conv.stride, conv.padding, conv.groups) == ((sr + 1,) * 2, (sr,) * 2, (sr // 2,) * 2, 16)
    seen = {}
    m.attention.kv.register_forward_pre_hook(lambda mod, inp: seen.update(keys=inp[0].shape[1]))
    y = m(torch.randn(2, 16, side, side))
    assert seen["keys"] == reduced * reduced and y.shape == (2, 16, side, side)


@pytest.mark.parametrize("stage,params,message", [
    (0, {"sr": 1}, "emsa: sr=1 on a 32x32 map gives each head a 1024x1024 attention map (> 65536 entries); "
                   "allowed here: sr >= 4"),
    (0, {"sr": 2}, "allowed here: sr >= 4"),
    (2, {"sr": 16}, "emsa: sr=16 reduces a 8x8 map by more than its side; allowed: sr <= 8"),
    (1, {"heads": 3}, "emsa: heads=3 must divide channels=32"),
])
def test_emsa_errors_name_the_parameter(stage, params, message):
    cfg = nas.preset_config("resnet20")
    cfg.stages[stage].blocks[1].attention = nas.AttentionSpec("emsa", "standard", params)
    with pytest.raises(nas.ConfigError) as info:
        nas.build_model(cfg)
    assert str(info.value).startswith(f"stages[{stage}].blocks[1].attention: emsa: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_emsa_fits_where_the_map_allows():
    cfg = nas.preset_config("resnet20")
    cfg.stages[0].blocks[1].attention = nas.AttentionSpec("emsa", "standard", {"sr": 4})  # 1024 x 64
    cfg.stages[1].blocks[1].attention = nas.AttentionSpec("emsa", "post", {"sr": 1, "heads": 4})  # 256 x 256
    nas.build_model(cfg)(torch.randn(2, 3, 32, 32)).sum().backward()


def test_sc_pooling_rate_must_fit_the_map():
    cfg = nas.preset_config("resnet20")
    cfg.stages[2].blocks[2].attention = nas.AttentionSpec("sc", "standard", {"r": 16})
    with pytest.raises(nas.ConfigError, match=r"stages\[2\]\.blocks\[2\]\.attention: sc: r=16 pools r x r "
                                              r"windows of a 8x8 map; allowed: r <= 8"):
        nas.build_model(cfg)


def test_paper_config_follows_rest_lite_per_stage():
    cfg = nas.paper_config("resnet20", "emsa")
    assert [[b.attention.params for b in st.blocks][0] for st in cfg.stages] == [
        {"heads": 1, "sr": 8}, {"heads": 2, "sr": 4}, {"heads": 4, "sr": 2}]
    assert {b.attention.position for _, _, b in cfg.blocks()} == {"post"}
    # ResNet-50's 56x56 first stage: sr 8 would give 3136 x 49 maps; raised to the first that fits
    big = nas.paper_config("resnet50", "emsa")
    assert [st.blocks[0].attention.params for st in big.stages] == [
        {"heads": 1, "sr": 14}, {"heads": 2, "sr": 4}, {"heads": 4, "sr": 2}, {"heads": 8, "sr": 1}]


# ---- the shipped spaces: every sampled parameter reaches the module


@pytest.mark.parametrize("name", ["sc", "emsa"])
def test_space_parameters_reach_the_modules(name):
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        cfg = space.sample(trial)
        model = nas.build_model(cfg)
        for s, stage in enumerate(cfg.stages, start=1):
            for b, block in enumerate(stage.blocks):
                if block.attention.type != name:
                    continue
                layer = getattr(model, f"layer{s}")[b]
                module = layer.conv1 if name == "sc" else layer.attention
                values = {"sc": lambda m: {"r": m.r, "upsample": m.upsample},
                          "emsa": lambda m: {"heads": m.attention.heads, "sr": m.attention.sr}}[name](module)
                for pname, value in values.items():
                    key = next((k for k in (f"s{s}.b{b}.{name}.{pname}", f"s{s}.{name}.{pname}") if k in trial.params),
                               None)
                    if key is not None:
                        assert value == trial.params[key], (key, value)
                        seen.add(pname)
                if name == "emsa":
                    assert layer.position == trial.params[f"s{s}.emsa.position"]
                    seen.add("position")
        study.tell(trial, 0.0)
    assert seen == ({"r", "upsample"} if name == "sc" else {"heads", "sr", "position"})


# ---- the profiler counts their arithmetic


@pytest.mark.parametrize("heads,sr", [(1, 1), (2, 4), (4, 2)])
def test_emsa_macs_include_the_attention_matmuls(heads, sr):
    c, side = 32, 16
    m = create_attention("emsa", c, heads=heads, sr=sr)
    n = side * side
    n_kv = (side // sr) ** 2 if sr > 1 else n  # 16 / 4 -> 4x4, 16 / 2 -> 8x8
    expected = (n * c * c  # W_q
                + n_kv * 2 * c * c  # W_kv
                + 2 * n * n_kv * c  # Q K^T and A V over all heads
                + n * c * c  # W_p
                + (n_kv * c * (sr + 1) ** 2 if sr > 1 else 0)  # depthwise reduction
                + (heads * heads * n * n_kv if heads > 1 else 0))  # transform conv across heads
    cost = nas.profile(m, (c, side, side))
    assert cost["macs"] == expected
    assert cost["elementwise"] >= 3 * heads * n * n_kv  # the softmax over each head's map at least


@pytest.mark.parametrize("stride", [1, 2])
def test_sc_macs_are_its_four_convs(stride):
    c, out, side, r = 16, 32, 16, 4
    m = create_attention("sc", c, out_channels=out, stride=stride, r=r)
    a, b, out_side = c // 2, out // 2, side // stride
    expected = (2 * out_side ** 2 * 9 * a * b  # K1 and K4, strided
                + (side // r) ** 2 * 9 * a * a  # K2 on the pooled map
                + side ** 2 * 9 * a * a)  # K3 at the input's resolution
    cost = nas.profile(m, (c, side, side))
    assert cost["macs"] == expected and cost["elementwise"] > 0
