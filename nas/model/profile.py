"""Cost of a model: MACs in the papers' convention, attention's element-wise
work as a separate figure, parameters, and optionally measured latency.

MACs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts
2 FLOPs per multiply-add of conv (grouped and dilated), linear, mm, bmm and
attention kernels; we halve it, as the attention papers report "FLOPs" that
are multiply-adds. Element-wise work inside attention modules (sigmoid,
softmax, scaling, pooling, normalisation) is not a MAC, so papers leave it
out; here it is counted separately by watching every aten op while an
attention module runs: one operation per element of the op's largest
tensor, softmax three (exp, sum, divide), shape-only ops free.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ..attention import NoAttention
from ..device import resolve_runtime
from ..kernels.choice import reference_kernels
from ..kernels.compiled import steady_state
from .network import count_parameters

_aten = torch.ops.aten

# ops that only move or re-view data: no arithmetic
_FREE = {
    _aten.view, _aten._unsafe_view, _aten.reshape, _aten.expand, _aten.permute, _aten.transpose,
    _aten.t, _aten.unsqueeze, _aten.squeeze, _aten.flatten, _aten.split, _aten.split_with_sizes,
    _aten.chunk, _aten.slice, _aten.select, _aten.cat, _aten.stack, _aten.clone, _aten.detach,
    _aten._to_copy, _aten.copy_, _aten.empty_like, _aten.zeros_like, _aten.alias, _aten.unbind,
    _aten.as_strided, _aten.contiguous, _aten.new_empty, _aten.fill_, _aten.zero_, _aten.lift_fresh, _aten.flip,
    _aten.empty, _aten.empty_strided,
}
# ops already counted as MACs by FlopCounterMode
_MAC_OPS = {
    _aten.convolution, _aten._convolution, _aten.mm, _aten.bmm, _aten.addmm, _aten.baddbmm,
    _aten.matmul, _aten.linear, _aten.conv1d, _aten.conv2d,
}
_PER_ELEMENT = {_aten._softmax: 3, _aten.softmax: 3, _aten._log_softmax: 3}


def _numel(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if isinstance(obj, (list, tuple)):
        return max((_numel(o) for o in obj), default=0)
    return 0


class _ElementwiseCounter(TorchDispatchMode):
    """Counts element-wise work while ``active`` > 0 (inside attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.active:
            packet = func.overloadpacket
            if packet not in _FREE and packet not in _MAC_OPS:
                size = max(_numel(args), _numel(out))
                self.total += _PER_ELEMENT.get(packet, 1) * size
        return out


def _attention_modules(model: nn.Module) -> list[nn.Module]:

    # outermost attention modules only, so nested ones are not entered twice
    found, inside = [], set()
    for name, m in model.named_modules():
        if getattr(m, "kind", None) in ("gate", "conv", "transition") and not isinstance(m, NoAttention):
            if not any(name.startswith(p + ".") for p in inside):
                found.append(m)
                inside.add(name)
    return found


def profile(model: nn.Module, input_size: int | tuple[int, ...] = 32, *, latency: bool = False,
            batch_size: int = 64, repeats: int = 10, device: str | torch.device | None = None) -> dict[str, Any]:
    """Cost of one image through ``model``.

    ``input_size``: side length (3 x s x s) or a full C x H x W tuple.
    Returns ``macs``, ``elementwise`` (attention's non-MAC work) and
    ``params``; with ``latency=True`` also ``latency_ms``, the median
    forward time of a ``batch_size`` batch over ``repeats`` runs.
    """
    shape = (3, input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    was_training = model.training
    model.eval()  # count one image; batch-statistics layers need no batch here
    counter = _ElementwiseCounter()
    hooks = []
    for module in _attention_modules(model):
        hooks.append(module.register_forward_pre_hook(lambda *_: setattr(counter, "active", counter.active + 1)))
        hooks.append(module.register_forward_hook(lambda *_: setattr(counter, "active", counter.active - 1)))
    try:
        param = next(model.parameters(), None)
        x = torch.zeros(1, *shape, device=param.device if param is not None else "cpu")
        # the plain formulations: MACs count the paper's arithmetic, not that of
        # a faster equivalent kernel (nas.kernels.choice.run_fastest)
        with torch.no_grad(), reference_kernels(), FlopCounterMode(display=False) as flops, counter:
            model(x)
        result: dict[str, Any] = {
            "macs": flops.get_total_flops() // 2,
            "elementwise": counter.total,
            "params": count_parameters(model),
        }
        if latency:
            result["latency_ms"] = measure_latency(model, shape, batch_size, repeats, device)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return result


def measure_latency(model: nn.Module, shape: tuple[int, ...], batch_size: int = 64, repeats: int = 10,
                    device: str | torch.device | None = None) -> float:
    """Median milliseconds of one forward pass of a batch, after warm-up."""
    param = next(model.parameters(), None)
    dev = torch.device(device) if device is not None else (param.device if param is not None else torch.device("cpu"))
    x = torch.randn(batch_size, *shape, device=dev)
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= 2:  # first runs pay for allocation and kernel selection
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure_step_latency(model: nn.Module, shape: tuple[int, ...], batch_size: int, runtime=None,
                         steps: int = 5, warmup: int = 2) -> float:
    """Median milliseconds of one training step of ``model`` on
    ``runtime``'s device and precision: forward, loss, backward and an SGD
    step on a ``batch_size`` batch, channels_last, as the trainer runs it.

    Runs on a copy, so ``model``'s weights, batch-norm statistics and the
    global random state are untouched. The ``warmup`` steps first pay for
    allocation and for choosing kernels (:func:`nas.kernels.choice.run_fastest`),
    once per architecture as in a trial, and are not counted. Compiled
    formulations (CBAM's) are offered from the first step
    (:func:`nas.kernels.compiled.steady_state`), as a search runs them once past its
    first 1000 calls with a shape: the latency is the step's cost in a long
    run, the same whenever in a search it is measured."""
    runtime = runtime or resolve_runtime()
    dev = runtime.device
    net = copy.deepcopy(model).to(dev).to(memory_format=torch.channels_last).train()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *shape, generator=generator).to(dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch_size,), generator=generator).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    times = []
    with steady_state():
        for i in range(warmup + steps):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            with runtime.autocast():
                loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
