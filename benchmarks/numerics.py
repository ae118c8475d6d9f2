"""Does the same config and seed train to the same accuracy, and what does
bf16 cost? (issue 35 item 1; docs/design.md section 6)

    python benchmarks/numerics.py repro        # 2 fresh processes x {race, plan}: `search.py train` of sk's trial-1 config
    python benchmarks/numerics.py precision    # none / SE / SK x bf16 / fp32 x 3 seeds at the sk proxy budget

``repro``: the ``sk`` space's trial 1 (SK in every stage, 28.13M MACs, from
``benchmarks/results/sk-search/nas.db``) trained by ``python search.py
train`` (20,000 images x 3 epochs, batch 128, lr 0.2, seed 0), each run a
fresh process: twice with the kernel choices raced anew (its numerics plan
file removed first: what every run did before plans) and twice under the
plan (the first run measures and keeps it, the second takes it).

``precision``: the attention-free resnet20, SE in every block and that SK
config, each with seeds 0-2, at the ``sk`` space's proxy budget (its
fidelity: 20,000 images x 3 epochs, batch 128, lr 0.2, warm-up 0.25, clip 5,
the search's validation images), in bf16 and in fp32, in this one process.

Both resume: each finished run is a line of ``--out`` (JSON), skipped when
asked again. Run alone on the machine (two torch processes on 2 cores crawl).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STORAGE = f"sqlite:///{REPO}/benchmarks/results/sk-search/nas.db"


def _done(out: Path) -> dict[str, dict]:
    """The runs ``out`` holds already, by key."""
    if not out.is_file():
        return {}
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {r["key"]: r for r in rows}


def _append(out: Path, row: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def _sk_trial1():
    import optuna

    from nas.model.config import ArchConfig

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="sk", storage=STORAGE)
    return ArchConfig.from_yaml(study.trials[1].user_attrs["config"])


def repro(out: Path, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "sk-trial1.yaml"
    if not config.is_file():
        _sk_trial1().save(config)
    plan = work / "sk-trial1.numerics.yaml"
    done = _done(out)
    for mode, run in (("race", 1), ("race", 2), ("plan", 1), ("plan", 2)):
        key = f"{mode}-{run}"
        if key in done:
            continue
        if mode == "race" or (mode == "plan" and run == 1):
            plan.unlink(missing_ok=True)  # race: choices measured anew; plan 1: measures the plan run 2 takes
        cmd = [sys.executable, str(REPO / "search.py"), "train", str(config), "--epochs", "3", "--subset", "20000",
               "--batch-size", "128", "--lr", "0.2", "--seed", "0"]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode:
            raise SystemExit(proc.stderr)
        results = yaml.safe_load((work / "sk-trial1.results.yaml").read_text())
        choices = (results.get("numerics") or {}).get("choices", {})
        _append(out, {"key": key, "mode": mode, "run": run, "val_accuracy": results["val_accuracy"],
                      "test_accuracy": results["test_accuracy"], "precision": results["precision"],
                      "fp32_choices": sum(1 for v in choices.values() if v[1]), "choices": len(choices),
                      "choice_set": sorted(f"{k}={v}" for k, v in choices.items()),
                      "seconds": round(time.perf_counter() - started, 1)})


def precision(out: Path) -> None:
    import torch

    from nas.device import configure_threads, resolve_runtime
    from nas.kernels.plan import PlanFile, RunRecord, planned
    from nas.model.presets import preset_config
    from nas.search.space import load_space
    from nas.training.evaluate import load_training_data, train_architecture

    configure_threads()
    space = load_space("sk")
    fidelity = space.fidelity
    data = load_training_data(fidelity)
    se = preset_config("resnet20")
    from nas.model.config import AttentionSpec

    for _, _, block in se.blocks():
        block.attention = AttentionSpec(type="se", params={"r": 16})
    configs = {"none": preset_config("resnet20"), "se": se, "sk": _sk_trial1()}
    done = _done(out)
    # none and SK in both precisions first (the question: does bf16 move SK more than the baseline?), SE last
    order = [("bf16", "none"), ("bf16", "sk"), ("fp32", "none"), ("fp32", "sk"), ("bf16", "se"), ("fp32", "se")]
    for prec, name in order:
        runtime = resolve_runtime("cpu", prec)
        plan = PlanFile(out.with_name(f"precision-{prec}.numerics.yaml"))
        cfg = configs[name]
        for seed in (0, 1, 2):
            key = f"{prec}-{name}-{seed}"
            if key in done:
                continue
            started = time.perf_counter()
            with planned(plan, RunRecord()):
                result = train_architecture(cfg, data, fidelity, seed, runtime)
            _append(out, {"key": key, "precision": prec, "arch": name, "seed": seed,
                          "val_accuracy": result.val_accuracy, "seconds": round(time.perf_counter() - started, 1),
                          "images_per_second": round(result.images_per_second, 1), "torch": torch.__version__})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("repro", "precision"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    results = REPO / "benchmarks" / "results" / "numerics"
    if args.what == "repro":
        repro(args.out or results / "repro.jsonl", REPO / "benchmarks" / "results" / "numerics" / "work")
    else:
        precision(args.out or results / "precision.jsonl")


if __name__ == "__main__":
    main()
