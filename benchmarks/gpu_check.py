"""The GPU checks, as one prepared script (issue 35 item 3; under 8 minutes
on one H100/H200):

    python benchmarks/gpu_check.py                      # on a GPU machine
    python benchmarks/gpu_check.py --device cpu --quick # proves the script itself (CI-sized, ~1 min)

In order, each step printing its figures as it ends (and all of them as
JSON to ``--out``):

1. the CUDA tests (``pytest -m cuda tests/test_cuda.py``);
2. trainer throughput: ``nas.training.train`` on resnet20, bf16 (the device's
   automatic precision), channels_last, eager and with the model compiled
   (``torch.compile``, compile time excluded and reported), images/s;
3. resnet20 time to 91 % test accuracy (the ``train`` recipe, evaluated
   after each epoch, stopped at the target or at ``--tta-minutes``);
4. N trials at once on one device through ``search.py --workers N`` (N = 1,
   2, 4, 8): images/s per trial and in total;
5. a ``--space sk`` search of ``--search-minutes`` (default 3), its front.

Without CIFAR-10 on the machine (``--data`` or data/cifar10), steps 2 and 4
use random images of its shape (throughput does not depend on pixels) and
steps 3 and 5 say they were skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import nas  # noqa: E402
from nas.device import configure_threads, resolve_runtime  # noqa: E402
from nas.training.train import Recipe, evaluate, train  # noqa: E402


def _images(data: str | None, n: int):
    """(train images, labels, test images, test labels, real) from CIFAR-10, or
    random ones of its shape when it is not on this machine."""
    try:
        from nas.training.datasets import load_dataset

        d = load_dataset("cifar10", data)
        return d.train_images[:n], d.train_labels[:n], d.test_images, d.test_labels, True
    except Exception as exc:  # no dataset here: throughput only
        print(f"# CIFAR-10 not found ({type(exc).__name__}); random images for throughput", flush=True)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        return images, torch.arange(n) % 10, images[:1000], torch.arange(1000) % 10, False


def cuda_tests(quick: bool) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "test_cuda.py")], cwd=REPO, capture_output=True, text=True)
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"returncode": proc.returncode, "summary": tail, "seconds": round(time.perf_counter() - started, 1)}


def throughput(runtime, images, labels, batch: int, steps: int, compiled: bool = True) -> dict:
    """images/s of nas.training.train, eager and (``compiled``) with the model compiled."""
    out = {} if compiled else {"compiled": "skipped (--quick: a CPU compile takes minutes)"}
    n = batch * steps
    for mode in ("eager", "compiled") if compiled else ("eager",):
        model = nas.build_model(nas.preset_config("resnet20"))
        compile_seconds = 0.0
        if mode == "compiled":
            started = time.perf_counter()
            model = torch.compile(model)
            # the first steps compile (forward and backward): timed apart from the throughput
            train(model, images[:2 * batch], labels[:2 * batch], images[:batch], labels[:batch], (0.5,) * 3,
                  (0.25,) * 3, Recipe(epochs=1, batch_size=batch, lr=0.1, warmup_epochs=0.5, seed=0), runtime)
            compile_seconds = time.perf_counter() - started
        result = train(model, images[:n], labels[:n], images[:batch], labels[:batch], (0.5,) * 3, (0.25,) * 3,
                       Recipe(epochs=1, batch_size=batch, lr=0.1, warmup_epochs=0.1, seed=0), runtime)
        out[mode] = {"images_per_second": round(result.images_per_second, 1), "precision": result.precision,
                     "compile_seconds": round(compile_seconds, 1)}
    return out


def time_to_accuracy(runtime, data: str | None, target: float, minutes: float, quick: bool) -> dict:
    from nas.training.evaluate import budget_splits
    from nas.training.splits import channel_stats

    images, labels, test_images, test_labels, real = _images(data, 50000)
    if not real:
        return {"skipped": "no CIFAR-10 on this machine"}
    splits = budget_splits(labels, None, 2000 if quick else None)
    mean, std = channel_stats(images[splits.train])
    model = nas.build_model(nas.preset_config("resnet20"))
    deadline = time.perf_counter() + minutes * 60
    epochs = 1 if quick else 50
    seen: dict = {"reached": None, "epochs": 0, "test": 0.0}
    started = time.perf_counter()

    def after_epoch(rung: int, epochs_done: float, val_accuracy: float) -> bool:
        # the test accuracy after each epoch; stop at the target or the time limit
        seen["test"] = evaluate(model, test_images, test_labels, mean, std, runtime)
        seen["epochs"] = epochs_done
        if seen["test"] >= target and seen["reached"] is None:
            seen["reached"] = time.perf_counter() - started
        return seen["reached"] is not None or time.perf_counter() > deadline

    train(model, images[splits.train], labels[splits.train], images[splits.confirm], labels[splits.confirm], mean,
          std, Recipe(epochs=epochs, rungs=tuple(float(e) for e in range(1, epochs)), seed=0), runtime,
          callback=after_epoch)
    return {"target": target, "seconds_to_target": None if seen["reached"] is None else round(seen["reached"], 1),
            "epochs": round(seen["epochs"], 2), "last_test_accuracy": round(seen["test"], 4),
            "recipe": f"the train command's, {epochs} epochs (one-cycle schedule over all of them)"}


def workers(ns: list[int], seconds: int, data: str | None, quick: bool) -> dict:
    out = {}
    for n in ns:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"{tmp}/w.journal"  # a journal file: safe for several worker processes
            cmd = [sys.executable, str(REPO / "search.py"), "--space", "sk", "--study", f"w{n}", "--storage", url,
                   "--workers", str(n), "--timeout", str(seconds), "--trials", str(4 * n)]
            if quick:
                cmd += ["--subset", "256", "--val-size", "64", "--epochs", "0.5"]
            if data:
                cmd += ["--data", data]
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if proc.returncode not in (0, 130):
                out[n] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
                continue
            import optuna

            from nas.storage.backends import open_storage

            optuna.logging.set_verbosity(optuna.logging.ERROR)
            trials = optuna.load_study(study_name=f"w{n}", storage=open_storage(url)).trials
            speeds = [t.user_attrs["images_per_second"] for t in trials if "images_per_second" in t.user_attrs]
            out[n] = {"trials": len(speeds), "per_trial": round(sum(speeds) / len(speeds), 1) if speeds else None,
                      "total": round(sum(speeds) / len(speeds) * n, 1) if speeds else None}
    return out


def search(minutes: float, data: str | None, quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(REPO / "search.py"), "--space", "sk", "--storage", f"sqlite:///{tmp}/s.db",
               "--timeout", str(int(minutes * 60))]
        if quick:
            cmd += ["--subset", "256", "--val-size", "64", "--epochs", "0.5", "--trials", "2"]
        if data:
            cmd += ["--data", data]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        finished = len(re.findall(r"^trial\s+\d+ ", proc.stdout, re.M))
        front = proc.stdout[proc.stdout.find("Pareto front"):] if "Pareto front" in proc.stdout else ""
        return {"returncode": proc.returncode, "trials": finished, "front": front.strip()[:3000]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the device")
    p.add_argument("--data", default=None)
    p.add_argument("--tta-minutes", type=float, default=2.0)
    p.add_argument("--search-minutes", type=float, default=3.0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; --device cpu --quick checks the script")
    os.environ.setdefault("NAS_DEVICE", args.device)
    configure_threads()
    runtime = resolve_runtime(args.device)
    device = torch.cuda.get_device_name() if runtime.device.type == "cuda" else "cpu"
    report = {"device": device, "precision": runtime.precision, "torch": torch.__version__}
    print(f"# gpu_check on {device}, {runtime.precision}, torch {torch.__version__}", flush=True)
    steps = [
        ("cuda_tests", lambda: cuda_tests(args.quick)),
        ("throughput", lambda: throughput(runtime, *_images(args.data, 256 * 40)[:2],
                                          batch=32 if args.quick else 256, steps=3 if args.quick else 30,
                                          compiled=not args.quick)),
        ("time_to_accuracy", lambda: time_to_accuracy(runtime, args.data, 0.91, args.tta_minutes, args.quick)),
        ("workers", lambda: workers([2] if args.quick else [1, 2, 4, 8], 30 if args.quick else 25, args.data,
                                    args.quick)),
        ("search_sk", lambda: search(0.5 if args.quick else args.search_minutes, args.data, args.quick)),
    ]
    for name, step in steps:
        started = time.perf_counter()
        report[name] = step()
        print(f"{name} ({time.perf_counter() - started:.0f} s): {json.dumps(report[name])[:2000]}", flush=True)
        if args.out:
            args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
