"""CBAM's compiled formulation (inductor) computes what the module's
reference does, and the machinery around it (nas.kernels' compiled
formulations) stays bounded and safe: offered only where it can pay,
compiled once per shape with a dynamic batch, never given up on for its
compile time, and replaced by the plain formulation, once warned, where
compiling fails.
"""
from __future__ import annotations

import copy
import re
import time
import warnings

import pytest
import torch
from test_fast_attention import _reference_cbam

from nas.attention import cbam as cbam_module
from nas.attention import create_attention
from nas.device import resolve_runtime
from nas.errors import NasError
from nas.kernels import choice as kernel_choice
from nas.kernels import compiled as kernel_compiled
from nas.kernels.conv import ROW_PRODUCT_MAX_WIDTH, maps_to_one_by_row_products
from nas.model.profile import measure_step_latency

# 16 images x 16 channels x 32 x 32: the smallest map the compiled
# formulation is offered for
BATCH, CHANNELS, SIZE = 16, 16, 32


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    monkeypatch.setattr(kernel_choice, "_kernel_choices", {})
    monkeypatch.setattr(kernel_choice, "_trained_choices", {})
    monkeypatch.setattr(kernel_compiled, "_compile_failure", None)
    monkeypatch.setattr(kernel_compiled, "_training_calls", {})
    monkeypatch.setenv("NAS_COMPILE_AFTER", "1")  # offered from the first call


def _cbam(r=4, spatial_kernel=7):
    torch.manual_seed(0)
    m = create_attention("cbam", CHANNELS, r=r, spatial_kernel=spatial_kernel).train()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def _input(layout, batch=BATCH):
    torch.manual_seed(1)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return torch.randn(batch, CHANNELS, SIZE, SIZE).contiguous(memory_format=fmt), fmt


def _step(fn, m, x, grad, precision):
    x = x.detach().requires_grad_()
    m.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = fn(m, x)
    out.backward(grad.to(out.dtype))
    return out.float(), x.grad.float(), [p.grad.clone() for p in m.parameters()]


def _pinned(formulation, keys=None):
    """The module's forward with its formulation pinned (not timed); the
    choice's key appended to ``keys``."""
    def run(m, x):
        key = kernel_choice.kernel_key("cbam", (x, *m._weights()))
        kernel_choice.pin_kernel(key, formulation, False)
        if keys is not None:
            keys.append(key)
        return m(x)
    return run


def _relative(got, want):
    return ((got - want).norm() / want.norm()).item()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_compiled_cbam_matches_its_reference(layout, precision):
    m = _cbam()
    x, fmt = _input(layout)
    m = m.to(memory_format=fmt)
    grad = torch.randn(x.shape).contiguous(memory_format=fmt)
    reference = copy.deepcopy(m)
    exact = _step(_reference_cbam, reference, x, grad, "fp32")
    ref_bn = copy.deepcopy(reference.spatial_bn)  # running statistics after one reference step
    if precision == "bf16":
        reference.load_state_dict(m.state_dict())
        rounded = _step(_reference_cbam, reference, x, grad, "bf16")
    keys = []
    got = _step(_pinned("compiled", keys), m, x, grad, precision)
    assert kernel_choice.kernel_choices()[keys[0]] == ("compiled", False)
    assert kernel_compiled.compile_failure() is None  # compiled, not the fallback

    out, gx, pgrads = got
    if precision == "fp32":
        assert _relative(out, exact[0]) < 1e-5
        assert _relative(gx, exact[1]) < 1e-4
        for g, w in zip(pgrads, exact[2]):
            assert _relative(g, w) < 1e-3
    else:
        # no further from fp32 than the reference's own bf16 rounding takes it
        for new, old, truth in ((out, rounded[0], exact[0]), (gx, rounded[1], exact[1])):
            assert _relative(new, truth) <= 2 * _relative(old, truth) + 1e-3
        assert all(bool(torch.isfinite(g).all()) for g in pgrads)
    # the spatial BN's running statistics move as nn.BatchNorm2d moves them
    assert m.spatial_bn.num_batches_tracked.item() == ref_bn.num_batches_tracked.item() == 1
    tol = 1e-5 if precision == "fp32" else 2e-3
    assert torch.allclose(m.spatial_bn.running_mean, ref_bn.running_mean, atol=tol)
    assert torch.allclose(m.spatial_bn.running_var, ref_bn.running_var, rtol=tol * 10, atol=tol)


def test_eager_formulation_moves_running_statistics_like_batchnorm():
    # the small map of the other CBAM tests runs the eager formulation only
    m = _cbam()
    reference = copy.deepcopy(m)
    x = torch.randn(4, CHANNELS, 8, 8)
    assert not kernel_compiled.compiled_worthwhile("cbam", (x, *m._weights()))
    for _ in range(3):
        m(x)
        _reference_cbam(reference, x)
    assert m.spatial_bn.num_batches_tracked.item() == 3
    assert torch.allclose(m.spatial_bn.running_mean, reference.spatial_bn.running_mean, atol=1e-6)
    assert torch.allclose(m.spatial_bn.running_var, reference.spatial_bn.running_var, rtol=1e-5)
    m.eval()
    reference.eval()
    with torch.no_grad():
        assert torch.allclose(m(x), _reference_cbam(reference, x), atol=1e-5)


def test_compiled_copy_serves_another_batch_size_without_compiling_again():
    m = _cbam(r=8, spatial_kernel=3)  # a weight shape no other test compiles
    x, _ = _input("channels_last", batch=24)
    before = len(cbam_module._COMPILED._copies)
    _step(_pinned("compiled"), m, x, torch.randn(x.shape), "fp32")
    assert len(cbam_module._COMPILED._copies) == before + 1
    compiled = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    y, _ = _input("channels_last", batch=20)  # the epoch's last, smaller batch
    _step(_pinned("compiled"), m, y, torch.randn(y.shape), "fp32")
    assert len(cbam_module._COMPILED._copies) == before + 1
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == compiled


def test_compiled_formulation_is_offered_only_where_it_can_pay(monkeypatch):
    large = torch.randn(BATCH, CHANNELS, SIZE, SIZE)
    assert kernel_compiled.compiled_worthwhile("op", (large,))
    assert not kernel_compiled.compiled_worthwhile("op", (large[:BATCH // 2],))  # too small to repay a compile
    with torch.no_grad():
        assert not kernel_compiled.compiled_worthwhile("op", (large,))  # evaluation: the eager kernels serve
    monkeypatch.setenv("NAS_KERNELS", "reference")
    assert not kernel_compiled.compiled_worthwhile("op", (large,))
    monkeypatch.setenv("NAS_KERNELS", "tuned")
    monkeypatch.setenv("NAS_COMPILE_AFTER", "never")
    assert not kernel_compiled.compiled_worthwhile("op", (large,))
    monkeypatch.setenv("NAS_COMPILE_AFTER", "1")
    monkeypatch.setattr(kernel_compiled, "_compile_failure", "no compiler")
    assert not kernel_compiled.compiled_worthwhile("op", (large,))


@pytest.mark.parametrize("value", ["0", "-3", "soon", "1.5"])
def test_a_bad_compile_setting_is_named(value, monkeypatch):
    monkeypatch.setenv("NAS_COMPILE_AFTER", value)
    expected = f"NAS_COMPILE_AFTER: '{re.escape(value)}' is not a positive number of calls or 'never'"
    with pytest.raises(NasError, match=expected):
        kernel_compiled.compiled_worthwhile("op", (torch.randn(BATCH, CHANNELS, SIZE, SIZE),))


def test_a_short_run_never_compiles(monkeypatch):
    # only the K-th training call with one shape signature on is offered the
    # compiled formulation: a latency probe or a zero-cost score stays eager
    monkeypatch.setenv("NAS_COMPILE_AFTER", "3")
    offered = []
    original = cbam_module.run_fastest

    def recording(op, forms, tensors, *args, **kwargs):
        if op == "cbam":
            offered.append(tensors[0].shape[0])
            kernel_choice.pin_kernel(kernel_choice.kernel_key(op, tensors, *args), "eager", False)  # no compiling here
        return original(op, forms, tensors, *args, **kwargs)

    monkeypatch.setattr(cbam_module, "run_fastest", recording)
    m = _cbam()
    x, _ = _input("channels_last")
    for _ in range(2):
        m(x).sum().backward()
    m(x[:BATCH // 2]).sum().backward()  # too small: not counted
    assert offered == []
    m(torch.cat([x, x])).sum().backward()  # the batch size is not part of the signature
    assert offered == [2 * BATCH]
    m(x).sum().backward()
    assert offered == [2 * BATCH, BATCH]


def test_reference_mode_never_compiles(monkeypatch):
    monkeypatch.setenv("NAS_KERNELS", "reference")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled in reference mode"))
    m = _cbam()
    x, _ = _input("channels_last")
    m(x).sum().backward()
    assert not kernel_choice.kernel_choices()


def test_compile_failure_warns_once_and_runs_the_plain_function(monkeypatch):
    def failing(fn, **kwargs):
        def compiled(*args):
            raise torch._dynamo.exc.TorchDynamoException("InvalidCxxCompiler: no working C++ compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", failing)
    formulation = kernel_compiled.CompiledFormulation(lambda a, b: a * b + 1)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*InvalidCxxCompiler"):
        out = formulation(a, b)
    assert torch.equal(out, a * b + 1)
    assert "InvalidCxxCompiler" in kernel_compiled.compile_failure()
    assert not kernel_compiled.compiled_worthwhile("op", (torch.randn(BATCH, CHANNELS, SIZE, SIZE),))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the second call is quiet
        assert torch.equal(formulation(a, b), a * b + 1)


def test_errors_inside_the_function_are_not_taken_for_compile_failures(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    formulation = kernel_compiled.CompiledFormulation(lambda a, b: a @ b)
    with pytest.raises(RuntimeError):
        formulation(torch.randn(4, 3), torch.randn(4, 3))
    assert kernel_compiled.compile_failure() is None


def test_a_compiling_formulation_is_timed_however_long_its_first_run():
    calls = []

    def slow_first(x):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)  # "compiling"
        return x * 2

    x = torch.randn(8)
    assert kernel_choice._time_formulation(slow_first, (x,), False, "cpu", False, give_up=0.01) == float("inf")
    calls.clear()
    slow_first.compiles = True
    assert kernel_choice._time_formulation(slow_first, (x,), False, "cpu", False, give_up=0.01) < 0.05


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_cbam_splits_tied_channel_maxima_like_its_reference(precision):
    # inputs of a few distinct values: at most pixels several channels share
    # the max (in bf16 ties are common on real maps too); the max's gradient
    # must stay finite and be split among them as the eager path splits it
    m = _cbam()
    m = m.to(memory_format=torch.channels_last)
    with torch.no_grad():  # equal channel gates, so tied inputs stay tied after them
        m.fc2.weight.zero_()
        m.fc2.bias.zero_()
    torch.manual_seed(2)
    x = torch.randint(-2, 3, (BATCH, CHANNELS, SIZE, SIZE)).float().contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape).contiguous(memory_format=torch.channels_last)
    reference = copy.deepcopy(m)
    want = _step(_reference_cbam, reference, x, grad, precision)
    got = _step(_pinned("compiled"), m, x, grad, precision)
    assert kernel_compiled.compile_failure() is None
    assert bool(torch.isfinite(got[1]).all())
    tol = 1e-4 if precision == "fp32" else 2e-2
    assert _relative(got[0], want[0]) < tol
    assert _relative(got[1], want[1]) < tol


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("height, width", [(32, 32), (7, 12), (16, 3)])
def test_spatial_conv_as_row_products_equals_the_conv(kernel, height, width):
    torch.manual_seed(3)
    maps = torch.randn(3, 2, height, width, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(1, 2, kernel, kernel, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 1, height, width, dtype=torch.float64)
    want = torch.nn.functional.conv2d(maps, weight, padding=kernel // 2)
    want_grads = torch.autograd.grad(want, (maps, weight), grad)
    got = maps_to_one_by_row_products(list(maps.unbind(1)), weight)
    got_grads = torch.autograd.grad(got, (maps, weight), grad)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-12)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, atol=1e-12)


def test_compiled_cbam_on_maps_wider_than_the_row_products_pay_for():
    # past ROW_PRODUCT_MAX_WIDTH the compiled graph keeps the conv
    size = ROW_PRODUCT_MAX_WIDTH + 8
    m = _cbam().to(memory_format=torch.channels_last)
    torch.manual_seed(4)
    x = torch.randn(BATCH, CHANNELS, size, size).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape).contiguous(memory_format=torch.channels_last)
    reference = copy.deepcopy(m)
    exact = _step(_reference_cbam, reference, x, grad, "fp32")
    reference.load_state_dict(m.state_dict())
    rounded = _step(_reference_cbam, reference, x, grad, "bf16")
    got = _step(_pinned("compiled"), m, x, grad, "bf16")
    assert kernel_compiled.compile_failure() is None
    for new, old, truth in zip(got[:2], rounded[:2], exact[:2]):
        assert _relative(new, truth) <= 2 * _relative(old, truth) + 1e-3


@pytest.mark.parametrize("after", ["1000", "never"])
def test_latency_is_measured_as_a_long_run_steps(after, monkeypatch):
    # the latency objective stands for a step of a long run: the compiled
    # formulation is on offer from the probe's first step (unless compiling
    # is off), and the probe's calls do not count toward the 1000-call rule,
    # so a design's latency does not depend on what the process ran before
    monkeypatch.setenv("NAS_COMPILE_AFTER", after)
    offered = []

    def spy(op, formulations, tensors, **kwargs):  # records the offer, runs eager (no compile here)
        offered.append((op, sorted(formulations)))
        return formulations["eager"](*tensors)

    monkeypatch.setattr(cbam_module, "run_fastest", spy)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, CHANNELS, 3, padding=1), create_attention("cbam", CHANNELS, r=4),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(CHANNELS, 2))
    latency = measure_step_latency(model, (3, SIZE, SIZE), BATCH, resolve_runtime("cpu", "fp32"), steps=2, warmup=1)
    assert latency > 0
    assert offered == ([("cbam", ["compiled", "eager"])] * 3 if after == "1000" else [])
    assert kernel_compiled._training_calls == {}
    offered.clear()
    model.train()(torch.randn(BATCH, 3, SIZE, SIZE))  # outside the probe the call-count rule holds again
    assert offered == []
