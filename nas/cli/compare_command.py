"""``search.py compare``: several studies' fronts in one table and one plot."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import NasError
from ._options import Command, add_storage


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--study", action="append", required=True, metavar="NAME",
                   help="a study to compare; give two or more")
    add_storage(c, "Optuna storage holding the studies")
    c.add_argument("--out", default=None, help="folder for compare.csv and compare.png "
                   "(default: studies/compare-A-B-...)")
    c.add_argument("--allow-different-fidelity", action="store_true",
                   help="compare studies searched at different budgets (refused otherwise); the output says so")


def run(args: argparse.Namespace) -> int:
    from ..report.compare import compare_studies  # lazy: a command loads its modules when it runs
    from ..storage.backends import load_study  # lazy: a command loads its modules when it runs

    if len(args.study) < 2:
        raise NasError(f"compare needs at least two studies, got {len(args.study)}: give --study twice or more")
    studies = [load_study(name, args.storage) for name in args.study]
    out = compare_studies(studies, args.out or Path("studies") / ("compare-" + "-".join(args.study)),
                          args.allow_different_fidelity)
    if out["warning"]:
        print(out["warning"])
    table = out["table"]
    latency = out["cost_objective"] == "latency"
    shown = table.assign(
        macs=(table.macs / 1e6).round(2).astype(str) + "M",
        accuracy_std=table.accuracy_std.map(lambda v: "" if v is None or v != v else f"{v:.4f}"),
        delta_accuracy=table.delta_accuracy.map(lambda v: "" if v is None or v != v else f"{v:+.4f}"),
        merged_front=table.merged_front.map(lambda v: "*" if v else ""))
    print(shown[["study", "trial", "val_accuracy", "accuracy_std", "seeds", "macs", *(["latency_ms"] if latency else []),
                 "params", "delta_accuracy", "merged_front", "attention"]].to_string(index=False))
    from ..report.report import COST_UNITS  # lazy: a command loads its modules when it runs

    scale, _, unit = COST_UNITS[out["cost_objective"]]
    ref = out["reference"]
    print(f"hypervolume against one reference point (accuracy {ref[0]:g}, {ref[1] / scale:g}{unit}):")
    for name, hv in out["hypervolumes"].items():
        print(f"  {name}: {hv:.4f}")
    print(f"  merged front (*): {out['merged_hypervolume']:.4f}")
    print(f"wrote {out['csv']}, {out['plot']}")
    return 0


COMMAND = Command("compare", add_arguments=add_arguments, run=run,
                  help="several studies' fronts in one table and one plot, hypervolumes against one reference point")
