"""The faster formulations of SK, PSA, SA and DANet compute what the plain
ones did (issue "Attention at the speed of its MACs").

Each ``_reference_*`` below is the module's forward as it was before the
speed work (stacked branch tensors, flips, plain convs, layout-blind
reshapes), kept here as the definition the fast code must match: outputs and
input gradients, in fp32 and under bf16 autocast, channels_last and
contiguous, at stride 1 and 2, whatever formulation the tuner picks.
"""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from nas.attention import create_attention
from nas.errors import NasError
from nas.kernels import choice as kernel_choice
from nas.kernels.broadcast import _TIMES_MAP, times_map
from nas.kernels.conv import conv2d, conv_settings, formulations
from nas.kernels.pool import (
    _CHANNEL_MAX,
    _SPATIAL_MAX,
    _masked,
    _selected,
    channel_max_mean,
    global_avg_pool,
    global_max_pool,
)


def _reference_sk(m, x):
    feats = torch.stack([branch(x) for branch in m.branches], dim=1)
    z = F.relu(m.fc_bn(m.fc(global_avg_pool(feats.sum(1)))))
    n, k, c = feats.shape[:3]
    weights = m.select(z).view(n, k, c, 1, 1).softmax(dim=1)
    return (feats * weights).sum(1)


def _reference_psa(m, x):
    feats = torch.stack([conv(x) for conv in m.convs], dim=1)
    n, s, c = feats.shape[:3]
    pooled = global_avg_pool(feats).reshape(n * s, c, 1, 1)
    weights = m.se_fc2(F.relu(m.se_fc1(pooled))).sigmoid().view(n, s, c, 1, 1).softmax(dim=1)
    out = (feats * weights).flip(1).flatten(1, 2)
    return F.relu(m.bn(out), inplace=True)


def _reference_sa(m, x):
    n, c, h, w = x.shape
    x = x.reshape(n * m.groups, c // m.groups, h, w)
    xc, xs = x.chunk(2, dim=1)
    xc = xc * (m.channel_weight * global_avg_pool(xc) + m.channel_bias).sigmoid()
    xs = xs * (m.spatial_weight * m.norm(xs) + m.spatial_bias).sigmoid()
    out = torch.cat([xc, xs], dim=1).reshape(n, c, h, w)
    return out.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


def _reference_danet(m, x):
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    energy = torch.bmm(m.query(x).flatten(2).transpose(1, 2), m.key(x).flatten(2))
    pos = torch.bmm(m.value(x).flatten(2), energy.softmax(-1).transpose(1, 2))
    energy_c = torch.bmm(flat, flat.transpose(1, 2))
    energy_c = energy_c.amax(-1, keepdim=True) - energy_c
    chan = torch.bmm(energy_c.softmax(-1), flat)
    return (m.gamma * pos + m.beta * chan).view(n, c, h, w) + x


def _reference_cbam(m, x):
    def mlp(z):
        return m.fc2(F.relu(m.fc1(z)))

    x = x * (mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True))).sigmoid()
    maps = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
    return x * m.spatial_bn(m.spatial(maps)).sigmoid()


REFERENCES = {"sk": _reference_sk, "psa": _reference_psa, "sa": _reference_sa, "danet": _reference_danet,
              "cbam": _reference_cbam}

# (name, channels, out_channels, stride, hyper-parameters): the shapes the
# spaces produce, with grouped, depthwise and dilated branch convs
CASES = [
    ("sk", 16, 16, 1, dict(G=16, M=2)),
    ("sk", 16, 32, 2, dict(G=8, M=3, kernels=[3, 5, 7])),
    ("sk", 32, 32, 1, dict(G=4, M=2, r=4, L=16)),
    ("sk", 16, 16, 2, dict(G=1, M=2)),
    ("psa", 16, 16, 1, dict(groups=[1, 4, 4, 4], r=4)),
    ("psa", 16, 32, 2, dict(groups=[1, 4, 8, 8], r=4)),
    ("sa", 32, None, 1, dict(groups=4)),
    ("danet", 16, None, 1, {}),
    ("cbam", 16, None, 1, dict(r=4)),
    ("cbam", 32, None, 1, dict(r=8, spatial_kernel=3)),
]


def _build(name, channels, out, stride, params):
    kw = dict(params)
    if out is not None:
        kw.update(out_channels=out, stride=stride)
    torch.manual_seed(0)
    m = create_attention(name, channels, **kw).train()
    with torch.no_grad():  # non-trivial gates: DANet's gamma/beta and SA's weights start at 0
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def _run(fn, m, x, grad):
    x = x.detach().requires_grad_()
    out = fn(m, x)
    (gx,) = torch.autograd.grad(out, x, grad.to(out.dtype))
    return out.float(), gx.float()


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch):
    monkeypatch.setattr(kernel_choice, "_kernel_choices", {})
    monkeypatch.setattr(kernel_choice, "_trained_choices", {})


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-s{c[3]}" for c in CASES])
def test_module_matches_its_reference(case, layout, precision):
    name, channels, out, stride, params = case
    m = _build(name, channels, out, stride, params)
    torch.manual_seed(1)
    x = torch.randn(4, channels, 16, 16)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    # train-mode BN on a 4-image batch amplifies bf16 rounding chaotically
    # (gradient errors of 5-15 % either way), so bf16 compares in eval mode
    m = m.to(memory_format=fmt).train(precision == "fp32")
    grad = torch.randn(REFERENCES[name](m, x).shape).contiguous(memory_format=fmt)  # as the next layer hands it
    exact, exact_grad = _run(REFERENCES[name], m, x, grad)  # fp32
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        ref, ref_grad = _run(REFERENCES[name], m, x, grad)
        fast, fast_grad = _run(lambda mod, t: mod(t), m, x, grad)
    # fp32: equal to rounding. bf16: no further from the fp32 result than
    # the reference's own bf16 rounding takes it (the tuner may run a conv in
    # fp32, closer to exact than the reference); errors as norms (a max over
    # elements is too noisy in bf16)
    for new, old, truth in ((fast, ref, exact), (fast_grad, ref_grad, exact_grad)):
        norm = truth.norm().item()
        if precision == "fp32":
            assert (new - old).abs().max().item() <= 1e-4 * truth.abs().max().item()
        else:
            assert (new - truth).norm().item() <= 1.5 * (old - truth).norm().item() + 1e-3 * norm
    if layout == "channels_last":  # the layout goes on to the next layer, forward and backward
        assert fast.is_contiguous(memory_format=torch.channels_last)
        assert fast_grad.is_contiguous(memory_format=torch.channels_last)


CONVS = [  # (in, out, kernel, stride, dilation, groups, bias)
    (16, 16, 3, 1, 2, 16, False),
    (16, 32, 3, 2, 3, 8, False),
    (16, 4, 9, 1, 1, 4, False),
    (32, 8, 7, 2, 1, 4, False),
    (16, 16, 3, 1, 2, 1, False),
    (16, 16, 5, 4, 1, 16, True),  # EMSA's reduction (sr 4): depthwise, kernel sr + 1, stride sr, with bias
    (16, 8, 3, 1, 1, 4, True),
]


@pytest.mark.parametrize("spec", CONVS, ids=[f"{c[0]}-{c[1]}-k{c[2]}-s{c[3]}-d{c[4]}-g{c[5]}{'-bias' * c[6]}"
                                             for c in CONVS])
def test_every_conv_formulation_is_the_plain_conv(spec):
    cin, cout, k, stride, dilation, groups, bias = spec
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, k, stride, dilation * (k - 1) // 2, dilation, groups, bias=bias)
    x = torch.randn(2, cin, 12, 12).to(memory_format=torch.channels_last)
    forms = formulations(conv)
    assert len(forms) >= 2 and next(iter(forms)) == "plain"
    params = (conv.weight,) + ((conv.bias,) if bias else ())
    results = {}
    for name, fn in forms.items():
        xi, *pi = (t.detach().requires_grad_() for t in (x, *params))
        out = fn(xi, *pi)
        results[name] = (out, *torch.autograd.grad(out, (xi, *pi), torch.ones_like(out)))
    assert torch.allclose(results["plain"][0], conv(x), atol=1e-6)  # the plain form is the module's own conv
    for name, got_all in results.items():
        for got, want in zip(got_all, results["plain"], strict=True):
            assert got.shape == want.shape, name
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item()), name


def test_emsa_reduction_is_chosen_like_the_other_convs():
    """EMSA's depthwise reduction (bf16 backward several times its fp32 one
    on an AVX-512 BF16 EPYC) goes through the same choice as SK's and PSA's
    convs, so under autocast it keeps fp32 where that is faster."""
    m = create_attention("emsa", 16, sr=4)
    m(torch.randn(2, 16, 8, 8)).sum().backward()
    convs = [key for key in kernel_choice.kernel_choices() if key[0] == "conv2d"]
    assert [key[1] for key in convs] == [(4, 2, 1, 16)]  # stride, padding, dilation, groups
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kernel_choice.pin_kernel(kernel_choice.kernel_key("conv2d", (torch.randn(2, 16, 8, 8), m.attention.reduce.weight,
                                                       m.attention.reduce.bias), (4, 2, 1, 16)), "plain", True)
        assert conv2d(torch.randn(2, 16, 8, 8), m.attention.reduce).dtype == torch.float32


def _pinned_conv_output(mode_fp32: bool, formulation: str = "dense"):
    conv = torch.nn.Conv2d(16, 16, 3, 1, 2, 2, 16, bias=False)
    x = torch.randn(2, 16, 8, 8)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        kernel_choice.pin_kernel(kernel_choice.kernel_key("conv2d", (x, conv.weight), conv_settings(conv)), formulation, mode_fp32)
        return conv2d(x, conv)


def test_an_op_chosen_in_fp32_runs_in_fp32_under_autocast():
    assert _pinned_conv_output(True).dtype == torch.float32
    assert _pinned_conv_output(False).dtype == torch.bfloat16


def test_reference_mode_runs_the_plain_formulation(monkeypatch):
    monkeypatch.setenv("NAS_KERNELS", "reference")
    assert _pinned_conv_output(True).dtype == torch.bfloat16  # the pin is ignored: plain conv under autocast
    monkeypatch.setenv("NAS_KERNELS", "fastest")
    with pytest.raises(NasError, match="NAS_KERNELS: 'fastest'.*tuned, reference"):
        _pinned_conv_output(True)


def test_tuning_times_once_per_shape_and_reads_no_random_numbers():
    m = create_attention("sk", 16, out_channels=16, stride=1, G=16, M=2)
    x = torch.randn(2, 16, 8, 8).to(memory_format=torch.channels_last)
    state = torch.random.get_rng_state()
    m(x).sum().backward()
    assert torch.equal(torch.random.get_rng_state(), state)
    choices = kernel_choice.kernel_choices()
    assert len(choices) == 2  # the two branches: dilation 1 and 2
    for (formulation, fp32), key in zip(choices.values(), choices):
        assert formulation in formulations(m.branches[0][0]) | formulations(m.branches[1][0]) and not fp32, key
    m(x).sum().backward()
    assert kernel_choice.kernel_choices() == choices


def test_evaluation_reuses_the_training_choice_without_timing(monkeypatch):
    m = create_attention("sk", 16, out_channels=16, stride=1, G=16, M=2)
    timings = []
    timer = kernel_choice._time_formulation
    monkeypatch.setattr(kernel_choice, "_time_formulation", lambda *a, **k: timings.append(a) or timer(*a, **k))
    m(torch.randn(2, 16, 8, 8)).sum().backward()
    trained = len(timings)
    assert trained > 0
    with torch.no_grad():
        m(torch.randn(16, 16, 8, 8))  # another batch size, no autograd: the training choice serves
    assert len(timings) == trained
    with torch.no_grad():
        m(torch.randn(16, 16, 4, 4))  # a shape training never saw is timed (forward only)
    assert len(timings) > trained


@pytest.mark.parametrize("formulation", ["plain", "fused"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_emsa_fused_attention_is_the_written_softmax_attention(formulation, precision, monkeypatch):
    # single-head EMSA picks between softmax(Q K^T s) V as written and PyTorch's
    # fused kernel; both must give the module's reference-mode result
    torch.manual_seed(0)
    m = create_attention("emsa", 16, heads=1, sr=2)
    x = torch.randn(2, 16, 8, 8).to(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    att = m.attention
    keys = []
    original = kernel_choice.run_fastest

    def pinning(op, forms, tensors, settings=(), **kwargs):
        key = kernel_choice.kernel_key(op, tensors, settings)
        keys.append(key)
        kernel_choice.pin_kernel(key, formulation, False)
        return original(op, forms, tensors, settings, **kwargs)

    def run():
        xx = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = m(xx)
        y.float().backward(grad)
        return y.float(), xx.grad, att.q.weight.grad.clone()

    with kernel_choice.reference_kernels():
        want = run()
    m.zero_grad()
    monkeypatch.setattr("nas.attention.emsa.run_fastest", pinning)
    got = run()
    assert keys and keys[0][0] == "attention"
    tol = 1e-4 if precision == "fp32" else 3e-2
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=tol, atol=tol * w.abs().max().item())


def test_evaluation_reuses_emsa_attention_choice_at_another_batch(monkeypatch):
    # queries, keys and values all carry the batch: evaluation at 1000 images
    # must find what training at 8 chose
    m = create_attention("emsa", 16, heads=1, sr=2)
    timings = []
    timer = kernel_choice._time_formulation
    monkeypatch.setattr(kernel_choice, "_time_formulation", lambda *a, **k: timings.append(a) or timer(*a, **k))
    m(torch.randn(8, 16, 8, 8)).sum().backward()
    trained = len(timings)
    assert trained == 4  # once each: the attention written and fused, the depthwise reduction plain and dense
    with torch.no_grad():
        m(torch.randn(32, 16, 8, 8))
    assert len(timings) == trained


@pytest.mark.parametrize("formulation", sorted(_SPATIAL_MAX))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_global_max_pool_is_amax_with_its_gradient(formulation, dtype):
    """Every forward the tuner may pick is amax; the gradient is autograd's
    for amax, ties (a map of zeros after a ReLU) split evenly, bit for bit."""
    torch.manual_seed(0)
    x = torch.randn(3, 16, 6, 6).to(dtype)
    x[0, 3] = 0.0  # a whole map tied
    x[1, 5, 2, 2] = x[1, 5, 4, 1] = x[1, 5].max() + 1  # two tied maxima
    x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(3, 16, 1, 1).to(dtype)
    kernel_choice.pin_kernel(kernel_choice.kernel_key("global_max_pool", (x,)), formulation, False)
    a, b = x.detach().requires_grad_(), x.detach().requires_grad_()
    want = a.amax((2, 3), keepdim=True)
    got = global_max_pool(b)
    want.backward(grad)
    got.backward(grad)
    assert kernel_choice.kernel_choices()[kernel_choice.kernel_key("global_max_pool", (x,))] == (formulation, False)
    assert torch.equal(got, want) and got.dtype == dtype
    assert torch.equal(b.grad, a.grad)
    assert b.grad[0, 3].eq(grad[0, 3, 0, 0] / 36).all() and b.grad[1, 5, 2, 2] == grad[1, 5, 0, 0] / 2
    assert b.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("formulation", sorted(_CHANNEL_MAX))
@pytest.mark.parametrize("channels", [16, 6])  # 6: the halving tree meets an odd count
def test_channel_max_mean_is_cat_of_amax_and_mean(formulation, channels):
    torch.manual_seed(0)
    x = torch.randn(2, channels, 5, 5)
    x[0, :, 1, 1] = 0.0  # every channel tied at one position
    x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 2, 5, 5).contiguous(memory_format=torch.channels_last)
    kernel_choice.pin_kernel(kernel_choice.kernel_key("channel_max", (x,)), formulation, False)
    a, b = x.detach().requires_grad_(), x.detach().requires_grad_()
    want = torch.cat([a.amax(1, keepdim=True), a.mean(1, keepdim=True)], 1)
    got = channel_max_mean(b)
    want.backward(grad)
    got.backward(grad)
    assert torch.equal(got, want)
    assert torch.allclose(b.grad, a.grad, rtol=0, atol=1e-7)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert b.grad.is_contiguous(memory_format=torch.channels_last)


def test_max_pools_stay_in_bf16_under_autocast():
    """A max is exact in any dtype: never timed in fp32 (an fp32 gate would
    promote the bf16 feature map it multiplies)."""
    x = torch.randn(4, 16, 8, 8).to(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.nn.functional.conv2d(x, torch.randn(16, 16, 1, 1))
        assert global_max_pool(y).dtype == torch.bfloat16
        assert channel_max_mean(y).dtype == torch.bfloat16
    assert all(not fp32 for key, (_, fp32) in kernel_choice.kernel_choices().items()
               if key[0] in ("global_max_pool", "channel_max"))


@pytest.mark.parametrize("formulation", [_masked, _selected], ids=["masked", "selected"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_every_amax_gradient_formulation_is_autograds(formulation, dtype, layout):
    """Both backward formulations the tuner chooses between give autograd's
    gradient of amax (ties share it evenly), over the map and over the
    channels (with a mean's gradient added, as channel_max_mean needs), bit
    for bit, in the input's layout."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    x = torch.randn(3, 8, 5, 5).to(dtype)
    x[0, 2] = 0.0  # a whole map tied
    x[1, :, 3, 3] = 0.0  # every channel tied at one position
    x = x.contiguous(memory_format=fmt)
    for dims, out_shape, with_mean in (((2, 3), (3, 8, 1, 1), False), (1, (3, 1, 5, 5), True)):
        a = x.detach().requires_grad_()
        top = a.amax(dims, keepdim=True)
        grad = torch.randn(out_shape).to(dtype).contiguous(memory_format=fmt)
        mean_grad = torch.randn(out_shape).to(dtype).contiguous(memory_format=fmt) if with_mean else None
        want = torch.autograd.grad(top, a, grad)[0]
        if with_mean:
            want = want + (mean_grad / x.shape[1])
        got = formulation(dims, x, top.detach(), grad, None if mean_grad is None else mean_grad / x.shape[1])
        assert got.dtype == dtype and torch.equal(got, want), dims
        assert got.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("formulation", sorted(_TIMES_MAP))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_times_map_formulation_is_the_broadcast_product(formulation, dtype):
    torch.manual_seed(0)
    x = torch.randn(3, 8, 5, 5).to(dtype).contiguous(memory_format=torch.channels_last)
    m = torch.randn(3, 1, 5, 5).to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(3, 8, 5, 5).to(dtype).contiguous(memory_format=torch.channels_last)
    a, am = x.detach().requires_grad_(), m.detach().requires_grad_()
    b, bm = x.detach().requires_grad_(), m.detach().requires_grad_()
    want = a * am
    got = _TIMES_MAP[formulation](b, bm)
    want.backward(grad)
    got.backward(grad)
    assert torch.equal(got, want) and torch.equal(b.grad, a.grad)
    # the map's gradient sums over channels: the same sum, perhaps in another order
    assert torch.allclose(bm.grad.float(), am.grad.float(), rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert b.grad.is_contiguous(memory_format=torch.channels_last)


def test_cbam_output_keeps_the_autocast_dtype():
    """CBAM's spatial conv may run in fp32 (measured choice); its gate goes
    back to the feature map's dtype, so the module hands bf16 on."""
    m = create_attention("cbam", 16, r=4).train().to(memory_format=torch.channels_last)
    x = torch.randn(4, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    maps = torch.empty(4, 2, 8, 8, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        key = kernel_choice.kernel_key("conv2d", (maps, m.spatial.weight), conv_settings(m.spatial))
        kernel_choice.pin_kernel(key, "plain", True)  # the spatial conv in fp32
        y = m(torch.nn.functional.conv2d(x, torch.randn(16, 16, 1, 1)))
    assert kernel_choice.kernel_choices()[key] == ("plain", True)
    assert y.dtype == torch.bfloat16
    assert times_map(x, x[:, :1]).dtype == torch.float32


def test_sa_output_keeps_the_autocast_dtype():
    """SA's channel gate is fp32 under autocast (fp32 parameters), its
    spatial gate in the map's dtype; the products, and so the module's
    output, stay in the feature map's dtype."""
    m = create_attention("sa", 32, groups=4).train().to(memory_format=torch.channels_last)
    x = torch.randn(4, 32, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.nn.functional.conv2d(x, torch.randn(32, 32, 1, 1)))
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)


def test_sa_spatial_gate_is_computed_in_the_maps_dtype():
    # the full-size spatial gate used to be promoted to fp32 by SA's fp32
    # parameters and cast back: under bf16 autocast it is computed in bf16,
    # on an fp32 map in fp32 (checked on the dtype of every full-size sigmoid)
    from torch.utils._python_dispatch import TorchDispatchMode

    class Sigmoids(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.sigmoid.default and args[0].shape[-1] > 1:
                self.dtypes.append(args[0].dtype)
            return func(*args, **(kwargs or {}))

    m = create_attention("sa", 32, groups=4).train().to(memory_format=torch.channels_last)
    x = torch.randn(4, 32, 8, 8).contiguous(memory_format=torch.channels_last)
    for dtype in (torch.bfloat16, torch.float32):  # a bf16 map under bf16 autocast; an fp32 map
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16), Sigmoids() as seen:
            m(x.to(dtype))
        assert seen.dtypes == [dtype]


class _NanGradient(torch.autograd.Function):
    """x * w whose gradient for w is NaN: a kernel that is fast and wrong."""

    @staticmethod
    def forward(ctx, x, w):
        return x * w

    @staticmethod
    def backward(ctx, grad):
        return grad, torch.full((1,), float("nan"))


def _slow_product(x, w):
    time.sleep(0.02)
    return x * w


def test_a_fast_formulation_with_wrong_results_is_never_chosen():
    x, w = torch.randn(4, 8), torch.randn(1)
    for wrong in ({"wrong_value": lambda x, w: x * w * 1.5}, {"nan_gradient": _NanGradient.apply}):
        kernel_choice._kernel_choices.clear()
        out = kernel_choice.run_fastest("product", {"plain": _slow_product, **wrong}, (x, w.requires_grad_()))
        assert kernel_choice.kernel_choices()[kernel_choice.kernel_key("product", (x, w))] == ("plain", False)
        out.sum().backward()
        assert torch.isfinite(w.grad).all()
        w.grad = None


def test_a_broken_low_precision_kernel_falls_back_to_fp32():
    def nan_gradient_in_bf16(x, w):  # right but slow in fp32, fast with a NaN weight gradient in bf16
        return _NanGradient.apply(x, w) if x.dtype == torch.bfloat16 else _slow_product(x, w)

    x, w = torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(1, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kernel_choice.run_fastest("product", {"plain": nan_gradient_in_bf16}, (x, w))
        key = kernel_choice.kernel_key("product", (x, w))
    assert kernel_choice.kernel_choices()[key] == ("plain", True)
    out.sum().backward()
    assert torch.isfinite(w.grad).all()


def _rounded_badly(error, delay):
    """x * w that strays ``error`` (relative) from fp32 when computed in bf16,
    as a module whose backward amplifies bf16's rounding does."""
    def product(x, w):
        time.sleep(delay)
        out = x * w.to(x.dtype)
        if x.dtype == torch.bfloat16:
            pattern = torch.ones(out.shape[-1], dtype=out.dtype)
            pattern[1::2] = -1
            out = out * (1 + error * pattern)
        return out
    return product


def test_rounding_that_costs_more_than_five_percent_is_not_taken_for_a_broken_kernel():
    # the plain formulation in bf16 is 8 % from fp32 (CBAM's input gradient
    # on 8x8 maps was 6.9 %): a faster formulation that rounds no worse is
    # chosen, where a flat 5 % bound rejected every one of them (NasError);
    # a still faster one 50 % off is never chosen
    x, w = torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(1, requires_grad=True)
    formulations = {"plain": _rounded_badly(0.08, 0.03), "fast": _rounded_badly(0.09, 0.01),
                    "broken": _rounded_badly(0.5, 0.0)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kernel_choice.run_fastest("product", formulations, (x, w), try_fp32=False)
        key = kernel_choice.kernel_key("product", (x, w))
    assert kernel_choice.kernel_choices()[key] == ("fast", False)


def test_no_right_formulation_names_the_errors_measured():
    x, w = torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(1, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(NasError) as caught:
        kernel_choice.run_fastest("product", {"plain": _rounded_badly(0.5, 0.0), "other": _rounded_badly(0.3, 0.0)},
                           (x, w), try_fp32=False)
    assert "kernel choice for product" in str(caught.value)
    assert "plain 0.5" in str(caught.value) and "other 0.3" in str(caught.value)


def test_choice_is_rejected_for_nan_even_beside_a_small_error():
    want = [torch.ones(3), torch.ones(2)]
    assert kernel_choice.relative_error([torch.ones(3) * 1.001, torch.tensor([1.0, float("nan")])], want) == float("inf")
    assert kernel_choice.relative_error([torch.ones(3), None], want) == float("inf")
    assert kernel_choice.relative_error([torch.ones(3) * 1.01, torch.ones(2)], want) == pytest.approx(0.01)


def test_sk_dilated_grouped_branch_has_right_weight_gradient_in_bf16():
    # PyTorch 2.14's bf16 CPU conv returned NaN weight gradients at this shape
    # (an AVX-512 BF16 EPYC): 16 channels, 32x32, 2 groups, dilation 3, channels_last
    conv = torch.nn.Conv2d(16, 16, 3, 1, 3, 3, groups=2, bias=False)
    x = torch.randn(8, 16, 32, 32).to(torch.bfloat16).to(memory_format=torch.channels_last)
    grad = torch.randn(8, 16, 32, 32).to(torch.bfloat16).to(memory_format=torch.channels_last)
    want = torch.nn.grad.conv2d_weight(x.float(), conv.weight.shape, grad.float(), 1, 3, 3, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv2d(x, conv)
    out.backward(grad.to(out.dtype))
    assert ((conv.weight.grad - want).norm() / want.norm()).item() < 0.02
