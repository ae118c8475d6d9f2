"""Compiled formulations: inductor fusing a module's element-wise work, offered
to :func:`nas.kernels.choice.run_fastest` like any other formulation, only
where a run is long enough to repay the compile (docs/design.md section 8)."""
from __future__ import annotations

import contextlib
import types
import warnings

import torch

from ..device import compile_after
from .choice import kernel_key, kernel_mode, sans_batch

# --- Compiled formulations: inductor fusing a module's element-wise work ---
#
# Some modules (CBAM) spend their time in a chain of memory-bound passes over
# the feature map (pools, gate products, channel max and mean, and the
# backward of each), which no choice of eager kernels removes: each op reads
# and writes the whole map. Inductor (``torch.compile``) fuses the chain into
# a few loops. A compiled formulation is offered to :func:`run_fastest` like
# any other, so it is used only where it is measured faster and checked
# right; what it costs is compile time, a few seconds per shape the first
# time in a process (then inductor's on-disk cache). To keep that bounded:
#   - each shape signature (per-image shape, dtype, layout of every input,
#     autocast dtype) gets its own compiled copy of the function, a fresh
#     code object, so that dynamo's recompile limit (8 variants per code
#     object) never silently sends a model's later stages back to eager, and
#     one shape's guards are never re-checked against another's;
#   - the batch dim is dynamic from the first call, so the epoch's last,
#     smaller batch does not compile again (measured: a batch-dynamic CBAM
#     graph runs within 0.1-1 ms of a static one; fully dynamic shapes do
#     not: a shuffle attention graph with symbolic channel counts ran ~30x
#     slower than eager);
#   - modules offer it only when autograd records (training), the map
#     holds at least ``_COMPILE_MIN_ELEMENTS`` values (below that a step
#     saves microseconds and the compile costs seconds; the suite's tiny
#     models would pay it in every test), and from the N-th training call
#     with the same shape signature in this process on (``NAS_COMPILE_AFTER``,
#     default 1000 calls: resnet20's 3 CBAMs a stage reach it at step 334;
#     ``never`` turns compiling off). A compile is a bet on the calls still
#     to come: it costs ~5 s a stage shape and saves ~5 ms a call (CBAM's
#     first stage, bf16, batch 128), so it pays after ~1000 calls. Measured
#     in fresh processes: compiling at the first call made 50-step runs
#     0.62x as fast, at the 300th call 250-step runs 0.84-1.09x. So a short
#     run (a zero-cost score, a benchmark, one trial) never compiles, and a
#     search worker, whose trials run in one process, starts compiling once
#     its trials have made 1000 calls with a shape and reuses the copies in
#     every later trial.
#   - a measurement that stands for a long run's step (the latency
#     objective, :func:`steady_state`) is made as the long run will run:
#     compiled formulations offered from its first call, whatever the
#     process did before. Counting its calls instead made a design's latency
#     depend on when in the search it was measured (eager before the
#     1000th call, compiled after it).
# Where compiling fails (no C++ compiler for inductor's CPU backend, an
# unsupported platform) the first failure is reported once as a warning and
# the plain formulation runs from then on. ``NAS_KERNELS=reference`` never
# compiles (:func:`run_fastest` runs the plain formulation), nor does
# ``NAS_COMPILE_AFTER=never``.

_COMPILE_MIN_ELEMENTS = 1 << 18
_compile_failure: str | None = None
_training_calls: dict[tuple, int] = {}
_steady_state_depth = 0


def compile_failure() -> str | None:
    """Why compiled formulations are off in this process (None: they are not)."""
    return _compile_failure




@contextlib.contextmanager
def steady_state():
    """Within it, compiled formulations are offered from the first call
    (unless compiling is off or has failed), and the calls do not count
    toward ``NAS_COMPILE_AFTER``: for measuring a step as a long run takes
    it once past its compiles."""
    global _steady_state_depth
    _steady_state_depth += 1
    try:
        yield
    finally:
        _steady_state_depth -= 1


def compiled_worthwhile(op: str, tensors: tuple[torch.Tensor, ...]) -> bool:
    """Whether a module should offer a compiled formulation of ``op`` for
    ``tensors`` (its input first): on CPU, with autograd recording, a large
    enough map, tuned kernels, no compile failure so far, and from the
    :func:`compile_after`-th such call with this shape signature on (each
    call counts)."""
    x = tensors[0]
    if torch.compiler.is_compiling():  # inside a compiled training step: inductor fuses the whole graph
        return False
    if not (x.device.type == "cpu" and torch.is_grad_enabled() and x.numel() >= _COMPILE_MIN_ELEMENTS
            and _compile_failure is None and kernel_mode() == "tuned"):
        return False
    after = compile_after()
    if after is None:
        return False
    if _steady_state_depth:
        return True
    key = sans_batch(kernel_key(op, tensors))
    calls = _training_calls[key] = _training_calls.get(key, 0) + 1
    return calls >= after


def _fresh_copy(fn):
    """``fn`` with a code object of its own (dynamo keeps its compiled
    variants, and counts them against its limit, per code object)."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


class CompiledFormulation:
    """``fn`` compiled by inductor, one compiled copy per shape signature of
    its tensor arguments, the first ``batched`` of which carry a dynamic batch
    dim; the plain ``fn`` runs if compiling fails (once warned)."""

    compiles = True  # _time_formulation: its first run is not a speed hint

    def __init__(self, fn, batched: int = 1) -> None:
        self._fn, self._batched = fn, batched
        self._copies: dict[tuple, object] = {}

    def __call__(self, *tensors):
        global _compile_failure
        if _compile_failure is not None:
            return self._fn(*tensors)
        key = sans_batch(kernel_key("compiled", tensors), self._batched)
        copy = self._copies.get(key)
        if copy is None:
            # inductor keeps bf16 intermediates in fp32 (its option
            # emulate_precision_casts rounds them as eager does, at 1.5x the
            # time for CBAM); a compiled function must not depend on that
            # rounding (see CBAM's channel max)
            copy = self._copies[key] = torch.compile(_fresh_copy(self._fn), dynamic=False)
        for t in tensors[:self._batched]:
            torch._dynamo.maybe_mark_dynamic(t, 0)
        try:
            return copy(*tensors)
        except torch._dynamo.exc.TorchDynamoException as error:
            first_line = (str(error).strip().splitlines() or [""])[0]
            _compile_failure = f"{type(error).__name__}: {first_line}"
            warnings.warn(f"torch.compile failed here, so attention modules run uncompiled: {_compile_failure}",
                          RuntimeWarning, stacklevel=2)
            return self._fn(*tensors)
