"""The compiled training step (nas.training.compiled_step): equal to the eager
step within rounding, taken only by runs long enough to pay, recorded in
the numerics plan like every kernel choice."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.device import compile_step_setting, resolve_runtime
from nas.errors import NasError
from nas.kernels.choice import BROKEN_ERROR, kernel_plan
from nas.training import compiled_step
from nas.training.train import Recipe, train


class _Tiny(nn.Module):
    """conv, batch norm, ReLU and a residual add: what the compile fuses."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.stem(x)))
        x = torch.relu(x + self.bn2(self.conv(x)))
        return self.fc(x.mean((2, 3)))


def _batch(n: int = 16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=g).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (n,), generator=g)


def _images(n: int = 64):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_compiled_step_equals_the_eager_step_within_rounding(precision):
    runtime = resolve_runtime("cpu", precision)
    torch.manual_seed(0)
    model = _Tiny().to(memory_format=torch.channels_last).train()
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    eager = compiled_step._LossOf(model, criterion)
    compiled = torch.compile(eager, dynamic=False)
    x, y = _batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    error, eager_error = compiled_step.compare_steps(eager, compiled, model, x, y, runtime)
    # fp32: the same sums in another order; bf16: each fused op rounds on its own, as the eager step does
    assert error <= compiled_step.allowed_error(eager_error)
    if precision == "fp32":
        assert eager_error == 0 and error < 1e-4
    else:
        assert 0 < eager_error < BROKEN_ERROR
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats put back
    assert all(p.grad is None for p in model.parameters())
    # and the check can fail: a step that computes something else (a summed loss) is far off
    wrong = compiled_step._LossOf(model, nn.CrossEntropyLoss(label_smoothing=0.1, reduction="sum"))
    assert compiled_step.compare_steps(eager, wrong, model, x, y, runtime)[0] > BROKEN_ERROR


def test_a_run_too_short_to_pay_never_compiles(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled a short run"))
    images, labels = _images()
    recipe = Recipe(epochs=2, batch_size=16, lr=0.05, warmup_epochs=0.5)  # 8 steps, far below MIN_STEPS
    assert 8 < compiled_step.MIN_STEPS
    result = train(_Tiny(), images, labels, images[:16], labels[:16], (0.5,) * 3, (0.25,) * 3, recipe,
                   resolve_runtime("cpu", "fp32"))
    assert result.images_seen == 8 * 16
    runtime = resolve_runtime("cpu", "fp32")
    x, y = _batch()
    step = compiled_step.choose_step(_Tiny(), nn.CrossEntropyLoss(), x, y, runtime, compiled_step.MIN_STEPS - 1)
    assert isinstance(step, compiled_step._LossOf)


def test_the_eager_step_is_the_trainer_as_before():
    """Below the threshold the trainer's numbers are what they were: one
    training of the same model and seed twice gives identical accuracy and
    weights (the check and timing of a compiled step would have moved batch
    norm's statistics had they not been put back)."""
    images, labels = _images()
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05, warmup_epochs=0.5)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = _Tiny()
        train(model, images, labels, images[:16], labels[:16], (0.5,) * 3, (0.25,) * 3, recipe,
              resolve_runtime("cpu", "fp32"))
        weights.append(torch.cat([t.flatten().float() for t in model.state_dict().values()]))
    assert torch.equal(weights[0], weights[1])


def test_a_long_run_measures_the_step_once_and_the_plan_keeps_it(monkeypatch):
    monkeypatch.setattr(compiled_step, "MIN_STEPS", 4)  # "long" for a test: 4 steps
    monkeypatch.setattr(compiled_step, "_failure", None)
    images, labels = _images()
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05, warmup_epochs=0.5)
    runtime = resolve_runtime("cpu", "fp32")
    lines = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    with kernel_plan() as record:
        torch.manual_seed(0)
        train(_Tiny(), images, labels, images[:16], labels[:16], (0.5,) * 3, (0.25,) * 3, recipe, runtime)
    steps = {k: v for k, v in record.measured.items() if k.startswith("('train_step'")}
    assert len(steps) == 1 and list(steps.values())[0][0] in ("compiled", "eager"), record.measured
    assert any(line.startswith("compiled step: ") for line in lines), lines
    # a later run under that plan takes the stored choice without measuring
    monkeypatch.setattr(compiled_step, "compare_steps", lambda *a, **k: pytest.fail("measured again"))
    with kernel_plan(steps) as again:
        torch.manual_seed(0)
        train(_Tiny(), images, labels, images[:16], labels[:16], (0.5,) * 3, (0.25,) * 3, recipe, runtime)
    assert again.used == steps and not again.measured


def test_the_compile_setting_is_checked(monkeypatch):
    monkeypatch.setenv("NAS_COMPILE_STEP", "always")
    with pytest.raises(NasError, match="NAS_COMPILE_STEP: 'always' is not one of auto, never"):
        compile_step_setting()
    with pytest.raises(NasError, match="NAS_COMPILE_STEP"):
        resolve_runtime("cpu", "fp32")  # a bad setting fails before anything runs
    monkeypatch.setenv("NAS_COMPILE_STEP", "never")
    monkeypatch.setattr(compiled_step, "MIN_STEPS", 1)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled although never"))
    x, y = _batch()
    step = compiled_step.choose_step(_Tiny(), nn.CrossEntropyLoss(), x, y, resolve_runtime("cpu", "fp32"), 10 ** 6)
    assert isinstance(step, compiled_step._LossOf)
