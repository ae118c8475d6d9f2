"""``search.py report``: the Pareto table, CSV, plot and hypervolume of a study."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import NasError
from ._options import ARTIFACTS_DEFAULT, Command, add_artifact_dir, add_study


def add_arguments(r: argparse.ArgumentParser) -> None:
    add_study(r)
    r.add_argument("--out", default=None, help="folder for trials.csv, pareto.csv, pareto.png "
                   "(default: studies/STUDY/)")
    add_artifact_dir(r, f"optuna-dashboard artifact folder for the plot and trials.csv (default: {ARTIFACTS_DEFAULT})")


def run(args: argparse.Namespace) -> int:
    from ..report.note import publish  # lazy: a command loads its modules when it runs
    from ..report.report import write_report  # lazy: a command loads its modules when it runs
    from ..storage.artifacts import artifact_dir  # lazy: a command loads its modules when it runs
    from ..storage.backends import load_study, storage_for_reading  # lazy: a command loads its modules when it runs

    study = load_study(args.study, args.storage)
    out = write_report(study, args.out or Path("studies") / args.study)
    trials = out["trials"]
    counts = trials.state.value_counts().to_dict() if len(trials) else {}
    print(f"study {args.study!r}: {len(trials)} trials ("
          + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + ")")
    front = out["front"]
    if len(front):
        shown = front.assign(macs=(front.macs / 1e6).round(2).astype(str) + "M",
                             accuracy_std=front.accuracy_std.map(lambda v: "" if v is None or v != v else f"{v:.4f}"),
                             delta_accuracy=front.delta_accuracy.map(lambda v: "" if v is None or v != v else f"{v:+.4f}"),
                             delta_macs=front.delta_macs.map(lambda v: "" if v is None or v != v else f"{v / 1e6:+.2f}M"))
        timed = ["latency_ms"] if front.latency_ms.notna().any() else []
        deltas = ["delta_accuracy", "delta_macs"] if out["baseline"] is not None else []
        print(shown[["trial", "val_accuracy", "accuracy_std", "seeds", "noise", "macs", *timed, "params", *deltas,
                     "attention"]].to_string(index=False))
        if front.noise.astype(bool).any():
            from ..training.noise import marks_legend  # lazy: a command loads its modules when it runs

            print(marks_legend(out["seed_std"]))
    else:
        print("(no completed, trained trial yet)")
    base = out["baseline"]
    if base is not None:
        std = "" if base["accuracy_std"] is None else f" ± {base['accuracy_std']:.4f}"
        print(f"baseline (no attention): trial {base['trial']}, accuracy {base['val_accuracy']:.4f}{std}, "
              f"{base['macs'] / 1e6:.2f}M MACs; delta_* columns are against it")
    else:
        print("baseline (no attention): not trained in this study, so no delta_* columns")
    ref = out["reference"]
    if out["cost_objective"] == "latency":
        print(f"hypervolume {out['hypervolume']:.4f} (accuracy x ms per training step; reference point: "
              f"accuracy {ref[0]:g}, {ref[1]:.1f} ms/step)")
    else:
        print(f"hypervolume {out['hypervolume']:.4f} (accuracy x MMACs; reference point: accuracy {ref[0]:g}, "
              f"{ref[1] / 1e6:g}M MACs)")
    print(f"wrote {out['trials_csv']}, {out['pareto_csv']}, {out['plot']}")
    url = storage_for_reading(args.storage, args.study)
    try:
        shown = publish(study, out, url, artifact_dir(url, args.artifact_dir))
    except NasError:
        raise
    except Exception as exc:  # e.g. a read-only database role: the report's files are written all the same
        print(f"warning: the optuna-dashboard note and artifacts were not written: {type(exc).__name__}: "
              f"{' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 0
    print(f"optuna-dashboard: study note refreshed; artifacts in {shown['folder']}: "
          + "; ".join(f"{owner}: {', '.join(names)}" for owner, names in shown["artifacts"].items()))
    return 0


COMMAND = Command("report", add_arguments=add_arguments, run=run,
                  help="Pareto table, CSV, plot and hypervolume of a study")
