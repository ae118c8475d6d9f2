"""What keeping freed memory in the process (``nas.device.configure_allocator``)
saves a training step on this machine: glibc's malloc as it comes
(``NAS_MALLOC=system``) against the settings the tools make (``keep``).

Each (model, setting) is timed in a fresh process, since malloc's settings
and its dynamic thresholds cannot be put back within one: a training step
(forward, loss, backward, SGD; channels_last, the trainer's automatic
precision unless ``--precision``) of the model at its paper placement on
resnet20, the median of ``--steps`` steps after warm-up
(``nas.model.profile.measure_step_latency``). The two settings alternate which
goes first from one round to the next, so drift in the machine's speed hits
both alike; the ratio per model is of the medians over rounds.

    python benchmarks/allocator.py [--models none sk psa cbam] [--rounds 3] [--steps 8] [--batch-size 128]

Run it alone: two torch processes at once on a small CPU measure each other.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import _cifar
import torch

ROOT = Path(__file__).resolve().parent.parent

_WORKER = r"""
import json, sys
import nas
from nas.device import configure_threads, resolve_runtime
from nas.profile import measure_step_latency

name, batch, steps, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
threads = configure_threads()
runtime = resolve_runtime("cpu", precision)
model = nas.build_model(nas.paper_config("resnet20", name))
ms = measure_step_latency(model, (3, 32, 32), batch, runtime, steps=steps, warmup=3)
print(json.dumps({"ms": ms, "precision": runtime.precision, "threads": threads}))
"""


def _time(name: str, setting: str, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NAS_MALLOC"}
    env["NAS_MALLOC"] = setting
    out = subprocess.run([sys.executable, "-c", _WORKER, name, str(args.batch_size), str(args.steps), args.precision],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{name} ({setting}) failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["none", "sk", "psa", "cbam"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()

    settings = ("system", "keep")
    times = {(m, s): [] for m in args.models for s in settings}
    meta = {}
    for r in range(args.rounds):
        for name in args.models:
            for setting in settings if r % 2 == 0 else reversed(settings):
                result = _time(name, setting, args)
                times[name, setting].append(result["ms"])
                meta = result
    print(f"# {_cifar.cpu_model()} ({_cifar.cpu_bf16_flags()}), resnet20 paper placements, batch {args.batch_size}, "
          f"{meta['precision']}, {meta['threads']} threads, torch {torch.__version__}, {args.rounds} rounds of "
          f"{args.steps} steps, each (model, setting) in a fresh process")
    print("| model | glibc as it comes: ms/step | kept freed memory: ms/step | step time saved |")
    print("|---|---:|---:|---:|")
    for name in args.models:
        before = statistics.median(times[name, "system"])
        after = statistics.median(times[name, "keep"])
        print(f"| {name} | {before:.1f} | {after:.1f} | {before / after:.2f}x |")


if __name__ == "__main__":
    main()
