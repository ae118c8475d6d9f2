"""A long training's whole step compiled (docs/design.md section 8).

A search trial is a few hundred steps: too short to repay a compile. The
long runs — ``train``, ``promote``, ``ablate``, calibrate's reference — run
thousands of steps of one architecture, and there inductor can fuse what
eager PyTorch runs as separate passes over every feature map (batch norm's
statistics and normalisation, ReLU, the residual add, the attention gates,
and all their backward passes). So for a run of at least
:data:`MIN_STEPS` steps the network with its loss is compiled as one graph
(``torch.compile``: forward and, through AOTAutograd, backward), its
attention ops in their plain formulations (inside a compiled graph
:func:`nas.kernels.choice.run_fastest` steps aside: inductor picks the
kernels for the whole graph).

The compiled step is a formulation like any other: before it is used it is
checked against the eager step on the run's first batch (loss and every
parameter's gradient within the precision's rounding, the bound
:func:`nas.kernels.choice.run_fastest` uses) and timed against it over a few
steps, and it is taken only where it is right and faster. The choice is
recorded in the numerics plan (key ``train_step`` with the model's
structure and the batch's shape), so a study's later runs take it without
measuring again, and a run that failed to compile says so once and trains
eagerly. ``NAS_COMPILE_STEP=never`` turns it off; ``NAS_KERNELS=reference``
never compiles.
"""
from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..device import Runtime, compile_step_setting
from ..errors import one_line
from ..kernels.choice import key_text, kernel_mode, planned_or_measured, relative_error, rounding_bound

#: a run with fewer steps left than this never compiles. Measured on a
#: 2-core AMD EPYC with AVX-512 BF16 (docs/measurements/training-speed.md):
#: compiling resnet20 + SE's step takes 65 s with an empty inductor cache
#: (10 s with a warm one) and, in fp32, saves 56 ms of a 461 ms step at batch
#: 256, so it repays itself after ~1,150 steps; twice that, rounded up, keeps
#: the bet safe. A search trial (20,000 images x 3 epochs at batch 128: 468
#: steps) and calibrate's reference (1,560) never compile; a 50-epoch
#: ``train`` (8,790 steps) does
MIN_STEPS = 2500
#: the compiled step must take at most this share of the eager step's time
#: (timing noise must not flip the choice between equal steps)
_MIN_GAIN = 0.95
#: steps timed of each, after one untimed warm-up step
_TIMED_STEPS = 3
#: how far the compiled step's loss and gradients (all parameters' as one
#: vector) may stray from the eager step's in fp32: reordered sums in fp32
#: (measured 1.7e-3 on resnet20 + SE), or, in bf16, twice what the eager
#: step's own rounding costs (measured 5.7e-2, the compiled step 5.5e-2),
#: never as far as only a broken kernel goes (nas.kernels.choice.rounding_bound)
_FP32_FLOOR = 1e-2

#: why compiling the step failed in this process (None: it did not)
_failure: str | None = None


class _LossOf(nn.Module):
    """The network and its loss as one module: what is compiled."""

    def __init__(self, model: nn.Module, criterion: nn.Module) -> None:
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.criterion(self.model(x), y)


def step_key(model: nn.Module, x: Tensor, runtime: Runtime) -> str:
    """The plan key of a model's training step: its structure (module types
    and parameter shapes), the batch's shape, dtype and layout, the autocast
    dtype."""
    digest = hashlib.sha256()
    for name, module in model.named_modules():
        digest.update(f"{name}:{type(module).__name__};".encode())
    for name, p in model.named_parameters():
        digest.update(f"{name}:{tuple(p.shape)};".encode())
    layout = "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "contiguous"
    return key_text(("train_step", digest.hexdigest()[:16], tuple(x.shape), str(x.dtype), layout,
                     str(runtime.amp_dtype)))


def _loss_and_grads(step: Callable[[Tensor, Tensor], Tensor], model: nn.Module, x: Tensor, y: Tensor,
                    runtime: Runtime) -> tuple[Tensor, list[Tensor]]:
    model.zero_grad(set_to_none=True)
    with runtime.autocast():
        loss = step(x, y)
    loss.backward()
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _vector(grads: list[Tensor]) -> Tensor:
    return torch.cat([g.flatten().float() for g in grads])


def compare_steps(eager: Callable, compiled: Callable, model: nn.Module, x: Tensor, y: Tensor,
                  runtime: Runtime) -> tuple[float, float]:
    """(the compiled step's error, the eager step's error) against the eager
    step in fp32 on one batch: the larger relative error of the loss and of
    all gradients as one vector. In fp32 the eager error is 0; under bf16 it
    is what rounding alone costs. The model's buffers (batch norm's running
    statistics, which every training forward moves) are put back."""
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    fp32 = Runtime(device=runtime.device, amp_dtype=None)
    try:
        results = []
        for step, run in ((eager, fp32), (eager, runtime), (compiled, runtime)):
            results.append(_loss_and_grads(step, model, x, y, run))
            model.load_state_dict(buffers)
    finally:
        model.load_state_dict(buffers)
    (want_loss, want), *others = results

    def error(loss: Tensor, grads: list[Tensor]) -> float:
        return relative_error([loss, _vector(grads)], [want_loss, _vector(want)])

    eager_error = 0.0 if runtime.amp_dtype is None else error(*others[0])
    return error(*others[1]), eager_error


def allowed_error(eager_error: float) -> float:
    """How far the compiled step may stray, given the eager step's own error."""
    return rounding_bound(eager_error, _FP32_FLOOR)


def _time_steps(step: Callable, model: nn.Module, x: Tensor, y: Tensor, runtime: Runtime) -> float:
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        _loss_and_grads(step, model, x, y, runtime)  # warm-up (and, compiled, any recompile)
        best = math.inf
        for _ in range(_TIMED_STEPS):
            start = time.perf_counter()
            _loss_and_grads(step, model, x, y, runtime)
            best = min(best, time.perf_counter() - start)
        return best
    finally:
        model.load_state_dict(buffers)


def choose_step(model: nn.Module, criterion: nn.Module, x: Tensor, y: Tensor, runtime: Runtime,
                steps_left: int, out: Callable[[str], None] | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """``step(x, y) -> loss`` for this run: the compiled network-and-loss where
    the run is long enough, compiling works, the result matches the eager
    step and it is faster (or the study's plan says so), else the eager one.
    ``x, y``: the run's first batch, used only to check and time."""
    eager = _LossOf(model, criterion)
    if (compile_step_setting() == "never" or kernel_mode() == "reference" or steps_left < MIN_STEPS
            or runtime.device.type not in ("cpu", "cuda")):
        return eager
    compiled = torch.compile(eager, dynamic=False)

    def measure() -> tuple[str, bool]:
        global _failure
        if _failure is not None:
            return ("eager", False)
        started = time.perf_counter()
        try:
            error, eager_error = compare_steps(eager, compiled, model, x, y, runtime)  # the first call compiles
        except Exception as exc:  # no C++ compiler, an unsupported op: train eagerly, say so once
            _failure = f"{type(exc).__name__}: {one_line(exc, 200)}"
            warnings.warn(f"compiling the training step failed, so it runs eagerly: {_failure}", stacklevel=2)
            return ("eager", False)
        compile_seconds = time.perf_counter() - started
        bound = allowed_error(eager_error)
        if not error <= bound:  # NaN included
            if out:
                out(f"compiled step: relative error {error:.2e} against the fp32 eager step, above {bound:.2e}: "
                    f"eager")
            return ("eager", False)
        t_eager = _time_steps(eager, model, x, y, runtime)
        t_compiled = _time_steps(compiled, model, x, y, runtime)
        choice = "compiled" if t_compiled <= _MIN_GAIN * t_eager else "eager"
        if out:
            out(f"compiled step: {compile_seconds:.0f} s to compile and check, {t_compiled * 1e3:.0f} ms per step "
                f"against {t_eager * 1e3:.0f} eager (error {error:.1e}, eager's own {eager_error:.1e}): {choice}")
        return (choice, False)

    name, _ = planned_or_measured(step_key(model, x, runtime), measure)
    return compiled if name == "compiled" else eager
