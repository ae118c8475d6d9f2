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
    """Cores this process may run on (its CPU affinity), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
