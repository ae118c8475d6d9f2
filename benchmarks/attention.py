"""Cost of every attention module on the resnet20 backbone.

For each module at its paper's placement and defaults (``nas.paper_config``;
group counts fitted to CIFAR widths), prints parameters, MACs, attention's
element-wise operations and the measured median forward+backward time of a
training batch, relative to resnet20 without attention. All models are timed
in one run, interleaved round by round so that drift in the machine's speed
hits every module alike.

Precision: ``auto`` (the trainer's choice: bf16 autocast where the CPU has
bf16 units, fp32 otherwise), ``fp32`` or ``bf16``; several (``--precision
bf16 fp32``) are timed in the same interleaved rounds, with a column per
precision and the time of the first over the second per module, so "is a
module slower in bf16 than in fp32" is answered side by side. The header
names the CPU model and its bf16 flags: figures compare only within one run
on one CPU.

The table is a long training run's steady step, so compiled formulations
(CBAM's, see ``nas.kernels.compiled``) are offered from the first call here
(``NAS_COMPILE_AFTER=1`` unless set; the trainer's default waits 1000 calls,
so that short runs never pay a compile); the warm-up steps pay the compiles.

    python benchmarks/attention.py [--batch-size 128] [--rounds 5] [--precision auto|fp32|bf16 ...]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import _cifar
import torch

import nas
from nas.attention import attention_names
from nas.device import compile_after, configure_threads, resolve_runtime
from nas.kernels.choice import kernel_mode


def _step_time(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, runtime) -> float:
    start = time.perf_counter()
    with runtime.autocast():
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per module")
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()
    os.environ.setdefault("NAS_COMPILE_AFTER", "1")

    runtimes = {}
    for choice in args.precision:  # "auto" and the precision it resolves to are one column
        runtime = resolve_runtime("cpu", choice)
        runtimes.setdefault(runtime.precision, runtime)
    configure_threads()
    torch.manual_seed(0)
    names = attention_names()
    models, costs = {}, {}
    for name in names:
        model = nas.build_model(nas.paper_config(args.backbone, name))
        costs[name] = nas.profile(model, 32)
        models[name] = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(args.batch_size, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,))
    runs = [(name, precision) for name in names for precision in runtimes]
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for name, precision in runs:  # warm-up: allocator, oneDNN kernel selection, kernel choosing
        for _ in range(2):
            _step_time(models[name], x, y, runtimes[precision])
    for _ in range(args.rounds):
        for name, precision in runs:
            times[name, precision].append(_step_time(models[name], x, y, runtimes[precision]))

    median = {run: statistics.median(t) for run, t in times.items()}
    print(f"# {_cifar.cpu_model()} ({_cifar.cpu_bf16_flags()}), {args.backbone}, batch {args.batch_size}, "
          f"{' and '.join(runtimes)}, channels_last, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"kernels {kernel_mode()}, compiled from call {compile_after() or 'never'}, {args.rounds} rounds")
    columns = "".join(f" {p}: ms/batch | {p}: vs none |" for p in runtimes)
    first, *rest = runtimes
    ratio = f" {first} / {rest[0]} |" if rest else ""
    print(f"| attention | params | MACs (M) | element-wise (M) |{columns}{ratio}")
    print("|---|---:|---:|---:|" + "---:|---:|" * len(runtimes) + ("---:|" if rest else ""))
    for name in names:
        c = costs[name]
        cells = "".join(f" {median[name, p] * 1000:.1f} | {median[name, p] / median['none', p]:.2f}x |"
                        for p in runtimes)
        ratio = f" {median[name, first] / median[name, rest[0]]:.2f}x |" if rest else ""
        print(f"| {name} | {c['params']:,} | {c['macs'] / 1e6:.2f} | {c['elementwise'] / 1e6:.3f} |{cells}{ratio}")

if __name__ == "__main__":
    main()
