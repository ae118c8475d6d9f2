"""``search.py export``: a chosen architecture to YAML, with its metrics and provenance."""
from __future__ import annotations

import argparse

from ._options import Command, add_study


def add_arguments(e: argparse.ArgumentParser) -> None:
    add_study(e)
    e.add_argument("--pick", default="knee", help="knee (default), accuracy or smallest, from the Pareto front")
    e.add_argument("--max-macs", type=float, default=None, help="only front trials with at most this many MACs")
    e.add_argument("--trial", type=int, default=None, help="export this trial instead of picking")
    e.add_argument("-o", "--output", required=True, help="YAML file to write")


def run(args: argparse.Namespace) -> int:
    from ..report.export import export_trial, pick_trial  # lazy: a command loads its modules when it runs
    from ..storage.backends import load_study, storage_for_reading  # lazy: a command loads its modules when it runs

    study = load_study(args.study, args.storage)
    trial = pick_trial(study, args.pick, args.max_macs, args.trial)
    out = export_trial(study, trial, args.output, storage_for_reading(args.storage, args.study))
    how = f"trial {trial.number}" if args.trial is not None else f"{args.pick} of the Pareto front: trial {trial.number}"
    print(f"exported {how} (val accuracy {out['val_accuracy']:.4f}, {out['macs'] / 1e6:.2f}M MACs, "
          f"{out['params']:,} params, hash {out['structure_hash']}) to {out['path']}")
    if args.trial is None and args.pick == "knee":
        print(knee_note(study, trial, args.max_macs))
    print(f"retrain it: python search.py train {out['path']}")
    return 0


def knee_note(study, knee, max_macs: float | None) -> str:
    """One line: what the knee was taken over (the attention designs of
    the front, the baseline left out), or that it is the baseline."""
    from ..report.export import knee_candidates  # lazy: a command loads its modules when it runs
    from ..search.results import is_baseline, pareto_front  # lazy: a command loads its modules when it runs

    front = [t for t in pareto_front(study) if max_macs is None or t.user_attrs["macs"] <= max_macs]
    designs, left_out = knee_candidates(front)
    if is_baseline(knee):
        return ("the knee is the attention-free baseline: no attention design is on the front (nothing to ablate; "
                "--trial N exports a design of your choice)")
    if left_out:
        return (f"the knee of the {len(designs)} attention design(s) on the front; the attention-free baseline "
                f"(trial {', '.join(str(t.number) for t in left_out)}) is left out: it is the reference, "
                f"--pick accuracy|smallest or --trial N export it")
    return f"the knee of the {len(designs)} attention design(s) on the front"


COMMAND = Command("export", add_arguments=add_arguments, run=run,
                  help="write a chosen architecture to YAML, with its metrics and provenance")
