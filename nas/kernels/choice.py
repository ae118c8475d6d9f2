"""Which formulation of an op runs: timed on the call's own tensors the first
time a shape is seen, checked against the plain formulation in fp32, and
kept for the process (docs/design.md section 8). ``NAS_KERNELS=reference``
runs the plain formulation everywhere."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch

from ..device import kernel_setting
from ..errors import NasError

# --- Kernel choice: which formulation of an op is fastest on this machine ---
#
# Some attention ops can be computed several ways that give the same result
# (to rounding) at very different speeds, and which way wins depends on the
# CPU, the shape and the dtype: a dilated 3x3 depthwise conv runs ~4x faster
# here as a 5x5 conv with zeros between the taps, while for a dense conv the
# zeros make it slower. So the choice is made the way cuDNN's benchmark mode
# makes it: the first call with a new shape times each formulation (forward
# and, when autograd records, backward) on that call's own tensors, and the
# fastest one serves every later call with that shape in this process. Under
# autocast each formulation is also timed in fp32 (inputs cast up, autocast
# off), so an op that is slower in bf16 than in fp32 keeps fp32. Timing reads
# no random numbers, so it does not shift a run's random stream; but the
# winner can differ from one process to the next, and the rounding with it:
# for bit-for-bit repeatable runs across processes, use the reference mode.
#
# Fast is not enough: a choice must also be right. PyTorch 2.14's bf16 CPU
# conv returns NaN, infinite or wrong weight gradients for grouped dilated
# 3x3 convs on channels_last 16-channel 32x32 maps (SK's first-stage
# branches, G 2-8, dilation 2-3; measured on an AMD EPYC with AVX-512 BF16,
# relative error 1.3 where it stays finite), which made an SK trial of the
# default search diverge at step 2. So before a formulation is chosen, its
# output and input gradients on the call's own tensors (and a fixed random
# output gradient) are compared with the plain formulation's in fp32, and one
# that strays beyond rounding (``_TOLERANCE``) is never chosen; the plain
# formulation in the autocast dtype is no exception, so a broken bf16 kernel
# falls back to another formulation or to fp32.
#
# ``NAS_KERNELS=reference`` (or :func:`reference_kernels`) runs every op in
# its plain formulation, the one the module's docstring writes out; the
# profiler uses it so that MACs count the paper's arithmetic, not the
# kernel's. On CUDA the plain formulation always runs (cuDNN tunes itself).

_kernel_choices: dict[tuple, tuple[str, bool]] = {}
_trained_choices: dict[tuple, tuple[str, bool]] = {}  # made with autograd on, by per-image shape
_reference_depth = 0


def kernel_mode() -> str:
    """``tuned`` (default) or ``reference``: ``NAS_KERNELS``, or reference
    inside :func:`reference_kernels`."""
    mode = kernel_setting()
    return "reference" if _reference_depth else mode


# an alternative must beat the plain formulation by this much to be chosen,
# so that timing noise does not flip the choice between equal kernels
_MIN_GAIN = 0.9
# a formulation whose first (untimed, set-up paying) run takes this many times
# the best time so far is dropped without further timing
_GIVE_UP = 3.0
# the largest relative (Frobenius) error of a formulation's output or input
# gradients against the plain formulation in fp32: rounding to bf16/fp16
# costs ~0.4 %, a broken kernel gives NaN or errors of order 1
_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
_LOW_PRECISION_TOLERANCE = 0.05
# ... except where rounding alone costs more: a batch norm's backward over a
# map whose values sit far from their mean amplifies bf16's rounding (CBAM's
# spatial gate on 8x8 maps: the input gradient of the module in plain bf16
# autocast 6.9 % from fp32, and 6.8 % compiled). A low-precision formulation
# may then stray as far as twice what the plain formulation's own rounding
# costs, as long as that stays below what only a broken kernel gives
BROKEN_ERROR = 0.25




@contextlib.contextmanager
def reference_kernels():
    """Run every tunable op in its plain formulation inside this block."""
    global _reference_depth
    _reference_depth += 1
    try:
        yield
    finally:
        _reference_depth -= 1


# --- A numerics plan: the same choices in every process of a study ---
#
# Timing picks a formulation, and with it the precision (bf16 or fp32 under
# autocast), by a race on the machine at that moment: two processes training
# the same config and seed could train with different numerics (on the
# ``sk`` space, ~2 points of validation accuracy apart). A plan fixes the
# choices: within :func:`kernel_plan`, a key the plan holds takes the plan's
# choice before any timing, and every choice used or measured is recorded,
# so that the caller (:mod:`nas.kernels.plan`) can store it with the study and
# with each trial. Keys are stored as text (:func:`key_text`).
_planned: dict[str, tuple[str, bool]] = {}
_plan_records: list["PlanRecord"] = []


def key_text(key: tuple) -> str:
    """A kernel key as stable text (its repr: shapes, dtypes, settings)."""
    return repr(key)


@dataclass
class PlanRecord:
    """What ran inside one :func:`kernel_plan` block: key text -> (formulation,
    fp32) of every choice used, and of those the plan did not hold (measured
    in this process)."""

    used: dict[str, tuple[str, bool]] = field(default_factory=dict)
    measured: dict[str, tuple[str, bool]] = field(default_factory=dict)


@contextlib.contextmanager
def kernel_plan(planned: dict[str, tuple[str, bool]] | None = None):
    """Inside this block the choices of ``planned`` (key text -> (formulation,
    fp32)) are taken as they are, before any timing; yields a
    :class:`PlanRecord` of what ran."""
    global _planned
    record = PlanRecord()
    before = _planned
    _planned = {**before, **{k: (str(v[0]), bool(v[1])) for k, v in (planned or {}).items()}}
    _plan_records.append(record)
    try:
        yield record
    finally:
        _plan_records.remove(record)
        _planned = before


def _note_choice(text: str, choice: tuple[str, bool], measured: bool) -> None:
    for record in _plan_records:
        record.used[text] = choice
        if measured:
            record.measured[text] = choice


def planned_or_measured(text: str, measure) -> tuple[str, bool]:
    """The choice for a whole-step key (``text``, as :func:`key_text` writes
    keys): the plan's where it holds one, else ``measure()`` -> (formulation,
    fp32), measured now; recorded either way like every op's choice, so a
    study's plan fixes it for every later run (docs/design.md section 8)."""
    planned = _planned.get(text)
    choice = planned if planned is not None else measure()
    if _plan_records:
        _note_choice(text, choice, planned is None)
    return choice


def pin_kernel(key: tuple, formulation: str, fp32: bool) -> None:
    """Fix the choice for ``key`` (as :func:`run_fastest` builds it) instead
    of timing it: for tests, and for a user who measured it elsewhere."""
    _kernel_choices[key] = (formulation, fp32)


def kernel_choices() -> dict[tuple, tuple[str, bool]]:
    """The choices made so far in this process: key -> (formulation, fp32)."""
    return dict(_kernel_choices)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _call(fn, tensors: tuple[torch.Tensor, ...], fp32: bool, device_type: str) -> torch.Tensor:
    if not fp32:
        return fn(*tensors)
    with torch.autocast(device_type, enabled=False):
        return fn(*(t.float() if t.is_floating_point() else t for t in tensors))


def _time_formulation(fn, tensors: tuple[torch.Tensor, ...], fp32: bool, device_type: str,
                      backward: bool, repeats: int = 1, give_up: float = float("inf")) -> float:
    """Best of ``repeats`` timed runs after an untimed one; a formulation whose
    untimed run already took more than ``give_up`` seconds is not timed
    further (infinite): it cannot win, and timing it would cost more than
    the choice saves (a dense form of a 16-group conv does 16x the work)."""

    if getattr(fn, "compiles", False):
        give_up = float("inf")  # its first run compiles (seconds), which says nothing of its speed
    best = float("inf")
    for i in range(repeats + 1):
        inputs = tuple(t.detach().requires_grad_(backward and t.is_floating_point()) for t in tensors)
        start = time.perf_counter()
        with torch.enable_grad() if backward else torch.no_grad():
            out = _call(fn, inputs, fp32, device_type)
            if backward:
                out.backward(torch.ones_like(out))
        elapsed = time.perf_counter() - start
        if i == 0 and elapsed > give_up:
            return float("inf")
        if i:  # the first run pays for allocation and oneDNN's kernel setup
            best = min(best, elapsed)
    return best


def _results(fn, tensors: tuple[torch.Tensor, ...], fp32: bool, device_type: str, backward: bool,
             amp: torch.dtype | None) -> list[torch.Tensor | None]:
    """The output and (with ``backward``) each floating input's gradient for
    the same fixed random output gradient every call (drawn from a private
    generator, so the run's random stream is untouched; rounded to ``amp``
    first, so every formulation sees the same values)."""
    inputs = tuple(t.detach().requires_grad_(backward and t.is_floating_point()) for t in tensors)
    with torch.enable_grad() if backward else torch.no_grad():
        out = _call(fn, inputs, fp32, device_type)
        if not backward:
            return [out.detach()]
        noise = torch.randn(out.shape, generator=torch.Generator(out.device).manual_seed(0), device=out.device)
        grad = torch.empty_like(out, dtype=torch.float32).copy_(noise if amp is None else noise.to(amp))
        out.backward(grad.to(out.dtype))
    return [out.detach()] + [t.grad for t in inputs if t.is_floating_point()]


def rounding_bound(rounding: float, floor: float) -> float:
    """How far a low-precision result may stray from the fp32 reference when
    rounding alone costs the plain computation ``rounding``: twice that, at
    least ``floor``, never :data:`BROKEN_ERROR`; ``floor`` where the plain
    computation is itself that far off (also the compiled training step's
    bound, nas.training.compiled_step)."""
    return min(BROKEN_ERROR, max(floor, 2 * rounding)) if rounding <= BROKEN_ERROR else floor


def relative_error(got: list, want: list) -> float:
    """The largest relative error of ``got`` against ``want``, tensor by
    tensor (inf for a missing gradient or a NaN anywhere)."""
    worst = 0.0
    for g, w in zip(got, want):
        if g is None or w is None:
            if g is not w:
                return float("inf")
            continue
        w = w.float()
        scale = w.norm().item()
        error = (g.float() - w).norm().item() / (scale if scale > 0 else 1.0)
        if error != error:  # NaN, which max() would drop
            return float("inf")
        worst = max(worst, error)
    return worst


def kernel_key(op: str, tensors: tuple[torch.Tensor, ...], settings: tuple = ()) -> tuple:
    """What the choice for a call depends on: the op, its settings, the
    autocast dtype, whether autograd records, and each tensor's shape,
    dtype and layout."""
    device_type = tensors[0].device.type
    layouts = tuple((tuple(t.shape), t.dtype, t.dim() == 4 and not t.is_contiguous()
                     and t.is_contiguous(memory_format=torch.channels_last)) for t in tensors)
    return (op, settings, _autocast_dtype(device_type), torch.is_grad_enabled(), layouts)


def sans_batch(key: tuple, batched: int = 1) -> tuple:
    op, settings, amp, _, layouts = key
    return op, settings, amp, tuple((shape[1:], *rest) for shape, *rest in layouts[:batched]) + layouts[batched:]


def _fastest_correct(formulations: dict, tensors: tuple[torch.Tensor, ...], timed: dict, amp, device_type: str,
                     backward: bool, op: str, bounded: int | None) -> tuple[str, bool]:
    """The fastest timed (formulation, fp32) whose results agree with the
    plain formulation's in fp32; the plain one unless another is clearly
    faster (``_MIN_GAIN``)."""
    names = list(formulations)
    plain = (names[0], False)
    reference = _results(formulations[names[0]], tensors, True, device_type, backward, amp)
    # inputs already non-finite (a diverging run) leave nothing to check against
    checkable = all(t is None or bool(torch.isfinite(t).all()) for t in reference)
    errors: dict[tuple[str, bool], tuple[float, torch.dtype]] = {}

    def error(candidate: tuple[str, bool]) -> tuple[float, torch.dtype]:
        if candidate not in errors:
            name, fp32 = candidate
            got = _results(formulations[name], tensors, fp32, device_type, backward, amp)
            kept = len(got) if bounded is None else 1 + bounded
            finite = all(g is not None and bool(torch.isfinite(g).all()) for g in got[kept:])
            errors[candidate] = (relative_error(got[:kept], reference[:kept]) if finite else float("inf"), got[0].dtype)
        return errors[candidate]

    def correct(candidate: tuple[str, bool]) -> bool:
        if not checkable:
            return True
        err, dtype = error(candidate)
        bound = _TOLERANCE.get(dtype)
        if bound is None:  # low precision: allow what rounding costs here, unless the plain kernel is broken
            bound = rounding_bound(error(plain)[0], _LOW_PRECISION_TOLERANCE)
        return err <= bound

    ranked = sorted(timed, key=timed.get)  # those given up on (infinite) last: slow, but maybe the only right one
    fastest = next((c for c in ranked if correct(c)), None)
    if fastest is None:
        measured = ", ".join(f"{name}{' in fp32' if fp32 else ''} {err:.3g}" for (name, fp32), (err, _) in errors.items())
        raise NasError(f"kernel choice for {op}: no formulation of {', '.join(names)} matches the plain one in "
                       f"fp32 on shapes {[tuple(t.shape) for t in tensors]} (relative errors: {measured})")
    # the plain one is timed first, so never given up on
    return plain if correct(plain) and not timed[fastest] < _MIN_GAIN * timed[plain] else fastest


def run_fastest(op: str, formulations: dict, tensors: tuple[torch.Tensor, ...], settings: tuple = (),
                batched: int = 1, try_fp32: bool = True, bounded: int | None = None):
    """``formulations[name](*tensors)`` for the fastest name on this machine
    for this shape (see above); the first entry is the plain formulation.
    ``settings`` (hashable) holds whatever else, besides the tensors' shapes,
    layouts and dtypes, changes the work (stride, groups ...). The first
    ``batched`` tensors carry the batch in dim 0 (a conv's input, not its
    weight; attention's queries, keys and values), so evaluation at another
    batch size finds training's choice. ``try_fp32=False`` keeps the op in its
    inputs' dtype under autocast (a max: fp32 cannot make it more exact, and
    an fp32 result would promote whatever it meets).
    ``bounded``: for a formulation that is a whole module rather than one op,
    the number of leading tensors (the module's inputs) whose gradients the
    check bounds with the output; the gradients of the others (its weights,
    sums of rounding over every position) need only be finite."""
    names = list(formulations)
    x = tensors[0]
    device_type = x.device.type
    amp = _autocast_dtype(device_type)
    # traced into a compiled training step (nas.training.compiled_step), the
    # plain formulation: inductor chooses the kernels for the whole graph
    if (kernel_mode() == "reference" or device_type != "cpu" or torch.compiler.is_compiling()
            or (len(names) == 1 and (amp is None or not try_fp32))):
        return formulations[names[0]](*tensors)
    backward = torch.is_grad_enabled()
    key = kernel_key(op, tensors, settings)
    text = key_text(key)
    planned = _planned.get(text)
    choice = planned if planned is not None and planned[0] in formulations else _kernel_choices.get(key)
    if choice is planned and planned is not None and backward:  # evaluation follows the planned training choice
        _trained_choices[sans_batch(key, batched)] = choice
    if choice is None and not backward:
        # evaluation (no autograd, larger batches) takes what training chose for
        # the same op on the same per-image shapes: timing every formulation
        # again on 1000-image batches would cost more than it could save
        choice = _trained_choices.get(sans_batch(key, batched))
    if choice is None:
        timed: dict[tuple[str, bool], float] = {}
        for name in names:  # the plain formulation first: it sets the bar the others must stay near
            for fp32 in (False, True) if amp is not None and try_fp32 else (False,):
                best = min(timed.values(), default=float("inf"))
                timed[name, fp32] = _time_formulation(formulations[name], tensors, fp32, device_type, backward,
                                                      give_up=_GIVE_UP * best)
        choice = _fastest_correct(formulations, tensors, timed, amp, device_type, backward, op, bounded)
        if backward:
            _trained_choices[sans_batch(key, batched)] = choice
    _kernel_choices[key] = choice
    if _plan_records:  # a choice the plan did not hold is new to it (measured here, now or earlier)
        _note_choice(text, choice, choice is not planned)
    name, fp32 = choice
    return _call(formulations[name], tensors, fp32, device_type)
