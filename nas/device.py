"""Everything that depends on the hardware, in one place: which device, which
reduced-precision dtype, how many threads.

CPU: bf16 autocast where the processor has native bf16 arithmetic (AVX512-BF16
or AMX on x86, detected from the CPU flags), fp32 otherwise. CUDA: bf16 where
supported, else fp16 with a gradient scaler. ``NAS_DEVICE`` / ``--device``
override the choice; ``precision="fp32"`` forces full precision.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from dataclasses import dataclass
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
    kernel settings (``NAS_KERNELS``, ``NAS_COMPILE_AFTER``, ``NAS_COMPILE_STEP``) too, so that a bad
    one fails before anything runs, not at a module's first call."""
    kernel_setting()
    compile_after()
    compile_step_setting()
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

    choice = os.environ.get("NAS_MALLOC", "keep")
    if choice not in ("keep", "system"):
        raise NasError(f"NAS_MALLOC: {choice!r} is not one of keep, system")
    if choice == "system":
        return False

    if libc is None:
        if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
            return False

        libc = ctypes.CDLL("libc.so.6")
    if os.environ.get("LD_PRELOAD") or any(k.startswith(("MALLOC_", "GLIBC_TUNABLES")) for k in os.environ):
        return False
    for param, value in _ALLOCATOR_SETTINGS.items():
        if libc.mallopt(param, value) != 1:
            raise NasError(f"malloc: mallopt({param}, {value}) was refused")
    return True


# The kernel settings are read here, with the rest of the runtime, so that a
# bad one fails when the runtime is resolved, before anything runs; how they
# are used is nas.kernels' business (docs/design.md section 8).
_KERNEL_MODES = ("tuned", "reference")
_COMPILE_AFTER_CALLS = 1000


def kernel_setting() -> str:
    """``tuned`` (default) or ``reference``, from ``NAS_KERNELS``
    (:func:`nas.kernels.choice.kernel_mode` adds the in-process override)."""
    mode = os.environ.get("NAS_KERNELS", "tuned")
    if mode not in _KERNEL_MODES:
        raise NasError(f"NAS_KERNELS: {mode!r} is not one of {', '.join(_KERNEL_MODES)}")
    return mode


def compile_step_setting() -> str:
    """``auto`` (default: a training long enough to repay it compiles its
    whole step, :mod:`nas.training.compiled_step`) or ``never``, from
    ``NAS_COMPILE_STEP``."""
    value = os.environ.get("NAS_COMPILE_STEP", "auto")
    if value not in ("auto", "never"):
        raise NasError(f"NAS_COMPILE_STEP: {value!r} is not one of auto, never")
    return value


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
