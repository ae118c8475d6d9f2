"""Everything that depends on the hardware, in one place: which device, which
reduced-precision dtype, how many threads.

CPU: bf16 autocast where the processor has native bf16 arithmetic (AVX512-BF16
or AMX on x86, detected from the CPU flags), fp32 otherwise. CUDA: bf16 where
supported, else fp16 with a gradient scaler. ``NAS_DEVICE`` / ``--device``
override the choice; ``precision="fp32"`` forces full precision.
"""
from __future__ import annotations

import contextlib
import os
import sys
import types
import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from .errors import NasError


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True if the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def available_cores() -> int:
    """Cores this process may use, not the machine's: its CPU affinity, capped
    by a cgroup CPU quota (``docker --cpus``, Kubernetes CPU limits), which
    affinity does not show. More compute threads than the quota only get the
    process throttled, so a quota of 1.5 CPUs gives 1 thread."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, int(quota))) if quota is not None else cores


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> float | None:
    """CPUs this process's cgroups allow (quota / period), or None without a
    quota. Reads cgroup v2 ``cpu.max`` and v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` in the process's cgroup and every ancestor (a
    parent's quota binds its children; inside a container the mount's root is
    the container's own cgroup); the tightest one wins."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":  # v2 (unified, or beside v1 in hybrid mode)
            for mount in (root, os.path.join(root, "unified")):
                for folder in _cgroup_folders(mount, path):
                    limits += _read_v2_quota(os.path.join(folder, "cpu.max"))
        elif "cpu" in controllers.split(","):  # v1: mounted as cpu, or together with cpuacct
            for mount in (os.path.join(root, name) for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu")):
                for folder in _cgroup_folders(mount, path):
                    limits += _read_v1_quota(folder)
    return min(limits) if limits else None


def _cgroup_folders(mount: str, path: str) -> list[str]:
    """``mount/path`` and each of its parents up to ``mount``, those that exist."""
    parts = [p for p in path.split("/") if p]
    folders = [os.path.join(mount, *parts[:i]) for i in range(len(parts), -1, -1)]
    return [f for f in folders if os.path.isdir(f)]


def _read_v2_quota(file: str) -> list[float]:
    try:
        with open(file) as f:
            quota, period = f.read().split()[:2]
        return [] if quota == "max" else [int(quota) / int(period)]
    except (OSError, ValueError, ZeroDivisionError):  # absent or unreadable: no quota known here
        return []


def _read_v1_quota(folder: str) -> list[float]:
    try:
        with open(os.path.join(folder, "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(folder, "cpu.cfs_period_us")) as f:
            period = int(f.read())
    except (OSError, ValueError):  # absent or unreadable: no quota known here
        return []
    return [quota / period] if quota > 0 and period > 0 else []  # -1: no quota


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full fp32

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype is torch.float16

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def resolve_runtime(device: str | None = None, precision: str = "auto") -> Runtime:
    """Pick the device (``auto``, ``cpu``, ``cuda``, ``cuda:1`` ...) and the
    mixed-precision dtype (``auto``, ``fp32``, ``bf16``, ``fp16``). Checks the
    kernel settings (``NAS_KERNELS``, ``NAS_COMPILE_AFTER``) too, so that a bad
    one fails before anything runs, not at a module's first call."""
    kernel_mode()
    compile_after()
    name = device or os.environ.get("NAS_DEVICE") or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise NasError(f"--device: {name!r} is not a device; allowed: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NasError(f"--device: {name} requested but CUDA is not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise NasError(f"--device: {name!r} is not supported; allowed: auto, cpu, cuda, cuda:N")
    allowed = ("auto", "fp32", "bf16", "fp16")
    if precision not in allowed:
        raise NasError(f"--precision: {precision!r} is not one of {', '.join(allowed)}")
    if precision == "fp32":
        dtype = None
    elif precision == "bf16":
        dtype = torch.bfloat16
    elif precision == "fp16":
        dtype = torch.float16
    elif dev.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16 if cpu_has_bf16() else None
    return Runtime(dev, dtype)


def configure_threads(workers: int = 1) -> int:
    """Give this process its share of the cores: ``cores / workers`` intra-op
    threads (at least 1), one inter-op thread (there is no parallel graph to
    run), and denormals flushed (deep nets at init produce them; they are
    ~100x slower on x86). Returns the thread count."""
    threads = max(1, available_cores() // max(1, workers))
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # allowed once per process, before any parallel work
        torch.set_num_interop_threads(1)
    torch.set_flush_denormal(True)
    configure_allocator()
    return threads


# glibc's malloc serves a block above M_MMAP_THRESHOLD (128 KiB, raised only
# as far as the largest block freed so far) with a fresh mmap and gives it
# back to the kernel when freed, and trims the heap's free top beyond
# M_TRIM_THRESHOLD. A training step allocates and frees the same activation
# and gradient buffers (megabytes each) every step, so on CPU each of them
# is paged in again, zeroed by the kernel, on every step: measured on a
# 2-core AMD EPYC (AVX2, fp32, one thread, resnet20, batch 64, the settings
# alternated in one process), 460 ms a step with glibc's defaults, 322 ms
# with the three settings below. Keeping freed memory in the process makes
# the heap as large as a step's peak, and it stays that large.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_ALLOCATOR_SETTINGS = {_M_MMAP_THRESHOLD: 256 << 20, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 64 << 20}


def configure_allocator(libc=None) -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of returning
    it to the kernel (see above). Only on Linux with glibc, and not where the
    user has chosen the allocator (``LD_PRELOAD`` or a ``MALLOC_*``
    tunable in the environment) or set ``NAS_MALLOC=system`` (glibc as it
    comes: for comparison, or to give memory back between steps). Returns
    True when the settings were made."""
    import platform

    choice = os.environ.get("NAS_MALLOC", "keep")
    if choice not in ("keep", "system"):
        raise NasError(f"NAS_MALLOC: {choice!r} is not one of keep, system")
    if choice == "system":
        return False

    if libc is None:
        if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
            return False
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    if os.environ.get("LD_PRELOAD") or any(k.startswith(("MALLOC_", "GLIBC_TUNABLES")) for k in os.environ):
        return False
    for param, value in _ALLOCATOR_SETTINGS.items():
        if libc.mallopt(param, value) != 1:
            raise NasError(f"malloc: mallopt({param}, {value}) was refused")
    return True


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

_KERNEL_MODES = ("tuned", "reference")
_kernel_choices: dict[tuple, tuple[str, bool]] = {}
_trained_choices: dict[tuple, tuple[str, bool]] = {}  # made with autograd on, by per-image shape
_reference_depth = 0
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
_BROKEN = 0.25


def kernel_mode() -> str:
    """``tuned`` (default) or ``reference``, from ``NAS_KERNELS``."""
    mode = os.environ.get("NAS_KERNELS", "tuned")
    if mode not in _KERNEL_MODES:
        raise NasError(f"NAS_KERNELS: {mode!r} is not one of {', '.join(_KERNEL_MODES)}")
    return "reference" if _reference_depth else mode


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
# so that the caller (:mod:`nas.numerics`) can store it with the study and
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
    import time

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


def _error(got: list, want: list) -> float:
    """The largest relative error of ``got`` against ``want`` (inf for a
    missing gradient or a NaN anywhere)."""
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


def _sans_batch(key: tuple, batched: int = 1) -> tuple:
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
            errors[candidate] = (_error(got[:kept], reference[:kept]) if finite else float("inf"), got[0].dtype)
        return errors[candidate]

    def correct(candidate: tuple[str, bool]) -> bool:
        if not checkable:
            return True
        err, dtype = error(candidate)
        bound = _TOLERANCE.get(dtype)
        if bound is None:  # low precision: allow what rounding costs here, unless the plain kernel is broken
            rounding = error(plain)[0]
            bound = min(_BROKEN, max(_LOW_PRECISION_TOLERANCE, 2 * rounding)) if rounding <= _BROKEN \
                else _LOW_PRECISION_TOLERANCE
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
    if kernel_mode() == "reference" or device_type != "cpu" or (len(names) == 1 and (amp is None or not try_fp32)):
        return formulations[names[0]](*tensors)
    backward = torch.is_grad_enabled()
    key = kernel_key(op, tensors, settings)
    text = key_text(key)
    planned = _planned.get(text)
    choice = planned if planned is not None and planned[0] in formulations else _kernel_choices.get(key)
    if choice is planned and planned is not None and backward:  # evaluation follows the planned training choice
        _trained_choices[_sans_batch(key, batched)] = choice
    if choice is None and not backward:
        # evaluation (no autograd, larger batches) takes what training chose for
        # the same op on the same per-image shapes: timing every formulation
        # again on 1000-image batches would cost more than it could save
        choice = _trained_choices.get(_sans_batch(key, batched))
    if choice is None:
        timed: dict[tuple[str, bool], float] = {}
        for name in names:  # the plain formulation first: it sets the bar the others must stay near
            for fp32 in (False, True) if amp is not None and try_fp32 else (False,):
                best = min(timed.values(), default=float("inf"))
                timed[name, fp32] = _time_formulation(formulations[name], tensors, fp32, device_type, backward,
                                                      give_up=_GIVE_UP * best)
        choice = _fastest_correct(formulations, tensors, timed, amp, device_type, backward, op, bounded)
        if backward:
            _trained_choices[_sans_batch(key, batched)] = choice
    _kernel_choices[key] = choice
    if _plan_records:  # a choice the plan did not hold is new to it (measured here, now or earlier)
        _note_choice(text, choice, choice is not planned)
    name, fp32 = choice
    return _call(formulations[name], tensors, fp32, device_type)


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
_COMPILE_AFTER_CALLS = 1000
_compile_failure: str | None = None
_training_calls: dict[tuple, int] = {}
_steady_state_depth = 0


def compile_failure() -> str | None:
    """Why compiled formulations are off in this process (None: they are not)."""
    return _compile_failure


def compile_after() -> int | None:
    """From which training call of a shape signature compiled formulations
    are offered (``NAS_COMPILE_AFTER``: a positive number of calls, default
    1000, or ``never``: None)."""
    value = os.environ.get("NAS_COMPILE_AFTER", str(_COMPILE_AFTER_CALLS))
    if value == "never":
        return None
    if not value.isdigit() or int(value) < 1:
        raise NasError(f"NAS_COMPILE_AFTER: {value!r} is not a positive number of calls or 'never'")
    return int(value)


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
    if not (x.device.type == "cpu" and torch.is_grad_enabled() and x.numel() >= _COMPILE_MIN_ELEMENTS
            and _compile_failure is None and kernel_mode() == "tuned"):
        return False
    after = compile_after()
    if after is None:
        return False
    if _steady_state_depth:
        return True
    key = _sans_batch(kernel_key(op, tensors))
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
        key = _sans_batch(kernel_key("compiled", tensors), self._batched)
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
