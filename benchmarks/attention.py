"""Cost of every attention module on the resnet20 backbone.

For each module at its paper's placement and defaults (``nas.paper_config``;
group counts fitted to CIFAR widths), prints parameters, MACs, attention's
element-wise operations and the measured median forward+backward time of a
training batch, relative to resnet20 without attention. All models are timed
in one run, interleaved round by round so that drift in the machine's speed
hits every module alike.

    python benchmarks/attention.py [--batch-size 128] [--rounds 5] [--bf16]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import nas
from nas.attention import attention_names


def _step_time(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per module")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (default fp32)")
    args = parser.parse_args()

    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    names = attention_names()
    models, costs = {}, {}
    for name in names:
        model = nas.build_model(nas.paper_config(args.backbone, name))
        costs[name] = nas.profile(model, 32)
        models[name] = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(args.batch_size, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,))
    times: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # warm-up: allocator, oneDNN kernel selection
        for _ in range(2):
            _step_time(models[name], x, y, args.bf16)
    for _ in range(args.rounds):
        for name in names:
            times[name].append(_step_time(models[name], x, y, args.bf16))

    base = statistics.median(times["none"])
    print(f"# {args.backbone}, batch {args.batch_size}, {'bf16' if args.bf16 else 'fp32'}, channels_last, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("| attention | params | MACs (M) | element-wise (M) | fwd+bwd ms/batch | time vs none |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        c, t = costs[name], statistics.median(times[name])
        print(f"| {name} | {c['params']:,} | {c['macs'] / 1e6:.2f} | {c['elementwise'] / 1e6:.3f} | "
              f"{t * 1000:.1f} | {t / base:.2f}x |")


if __name__ == "__main__":
    main()
