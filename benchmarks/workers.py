"""Trials per hour with 1, 2 and 4 workers on this machine, same per-trial
budget, one run.

Each configuration runs the real command, ``search.py --space SPACE
--workers N --trials T`` on a fresh journal file, with random sampling and
no halving (a single rung), so every trial has the same budget. Wall time
covers everything a user waits for: process start-up, data loading, trials.
Reports trials per hour, trained (not duplicate) trials per hour and the
speed-up over one worker.

    python benchmarks/workers.py [--workers 1 2 4] [--trials 12] [--subset 5000] [--epochs 2]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--space", default="se")
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--data", help="dataset folder (default: $NAS_DATA, else data/<dataset>)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        space_file = Path(tmp) / "bench.yaml"
        # the shipped space with random sampling and a single rung: equal budgets, no pruning
        from nas.search.space import load_space

        spec = yaml.safe_load(load_space(args.space).source)
        spec["sampler"] = "random"
        spec.setdefault("fidelity", {}).update(rungs=[args.epochs], subset=args.subset, val_size=args.val_size)
        space_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        print(f"# space {args.space} (random sampler), subset {args.subset}, {args.epochs:g} epochs per trial, "
              f"{args.trials} trials per configuration")
        rows = []
        for n in args.workers:
            journal = Path(tmp) / f"w{n}.journal"
            cmd = [sys.executable, str(REPO / "search.py"), "--space", str(space_file), "--study", f"w{n}",
                   "--storage", str(journal), "--workers", str(n), "--trials", str(args.trials), "--timeout", "0"]
            if args.data:  # the runs' working directory is a temporary one
                cmd += ["--data", str(Path(args.data).resolve())]
            started = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
            wall = time.perf_counter() - started
            if out.returncode != 0:
                sys.exit(f"{n} workers failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
            trials = optuna.load_study(study_name=f"w{n}", storage=optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(str(journal)))).trials
            finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            trained = [t for t in finished if "duplicate_of" not in t.user_attrs and "not_trained" not in t.user_attrs]
            rows.append((n, len(finished), len(trained), wall))
            print(f"{n} worker{'s' if n > 1 else ' '}: {len(finished)} trials ({len(trained)} trained) in {wall:6.1f} s"
                  f"  -> {len(finished) / wall * 3600:6.1f} trials/h, {len(trained) / wall * 3600:6.1f} trained/h",
                  flush=True)
    base = rows[0]
    for n, finished, trained, wall in rows[1:]:
        print(f"speed-up of {n} workers over {base[0]}: {(trained / wall) / (base[2] / base[3]):.2f}x "
              f"(trained trials per hour)")


if __name__ == "__main__":
    main()
