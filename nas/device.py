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
    mixed-precision dtype (``auto``, ``fp32``, ``bf16``, ``fp16``)."""
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
    return threads
