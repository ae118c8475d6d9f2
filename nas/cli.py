"""Command line: ``python search.py COMMAND ...``.

Every user mistake surfaces as :class:`~nas.errors.NasError` and becomes one
line on stderr with exit code 2; anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import NasError


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: $NAS_DATA, then data/<dataset>)")
    p.add_argument("--dataset", default=None, help="cifar10, cifar100 or imagefolder (default: from the config's "
                   "meta.dataset, else cifar10)")


def _add_runtime_args(p: argparse.ArgumentParser, study: bool = True) -> None:
    """--device, --precision and (``study``) --mix-numerics."""
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", help="auto (bf16 where the hardware has it), fp32, bf16, fp16")
    if study:
        p.add_argument("--mix-numerics", action="store_true",
                       help="resume or join a study whose kernel choices (the numerics every trial trains with) "
                            "were measured on another kind of machine: this one measures its own, each trial "
                            "records them (default: refused in one line)")


def _add_full_budget_args(p: argparse.ArgumentParser, per: str) -> None:
    """The budget options of promote and ablate (the train command's recipe)."""
    p.add_argument("--seeds", type=int, default=2, help=f"seeds per {per} (default: 2)")
    p.add_argument("--epochs", type=float, default=None, help="training epochs (default: 50, as train)")
    p.add_argument("--subset", type=int, default=None,
                   help="train on a stratified subset of N images (default: all but the validation images)")
    p.add_argument("--val-size", type=int, default=None, help="validation images (default: 5000)")


COMMANDS = ("search", "spaces", "report", "compare", "export", "dashboard", "storage-proxy", "train", "calibrate",
            "promote", "ablate")


def _add_storage_args(p: argparse.ArgumentParser, study_required: bool = False) -> None:
    p.add_argument("--study", required=study_required, default=None,
                   help="study name" + ("" if study_required else " (default: the space's name)"))
    p.add_argument("--storage", default=os.environ.get("NAS_STORAGE"),
                   help="Optuna storage: sqlite:///PATH.db, postgresql+psycopg2://USER:PASSWORD@HOST/DB, "
                        "grpc://HOST:PORT (a storage-proxy) or a *.journal file (default: $NAS_STORAGE, else "
                        "sqlite:///studies/nas.db)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="search.py", description="Attention-aware neural architecture search. Without a command: "
        "`search.py --space NAME ...` runs the search.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("search", help="run or resume a search (the default command)",
                       description="Run or resume study NAME (default: the space's name): sample architectures "
                                   "from the space, train each on the proxy budget with Pareto-aware halving, "
                                   "and print the Pareto front of validation accuracy against MACs.")
    s.add_argument("--space", required=True, help="a shipped space (see `search.py spaces`) or a YAML file")
    _add_storage_args(s)
    s.add_argument("--trials", type=int, default=100, help="stop after this many more trials (default: 100)")
    s.add_argument("--timeout", type=float, default=1800,
                   help="stop starting trials after this many seconds (default: 1800; 0: no limit)")
    s.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")
    s.add_argument("--epochs", type=float, default=None, help="override the space's budget (last rung) in epochs")
    s.add_argument("--subset", type=int, default=None, help="override the space's training subset size")
    s.add_argument("--val-size", type=int, default=None, help="override the space's validation size")
    s.add_argument("--data", metavar="DIR", help="dataset folder (default: $NAS_DATA, then data/<dataset>)")
    s.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine, each with cores/N threads (default: 1); with N > 1 "
                        "the default storage is the journal file studies/nas.journal")
    s.add_argument("--heartbeat", type=int, default=None, metavar="SECONDS",
                   help="heartbeat interval on database storages; a trial silent for 3x this long (at least "
                        "180 s) is failed and retried (default: 60)")
    s.add_argument("--artifact-dir", default=None, metavar="DIR",
                   help="optuna-dashboard artifact folder, where each completed trial's config goes (default: "
                        "$NAS_ARTIFACTS, else beside the storage file: studies/nas.db -> studies/nas-artifacts; "
                        "studies/artifacts for a database server or proxy)")
    s.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)  # set for the workers we start
    _add_runtime_args(s)
    s.set_defaults(func=_cmd_search)

    sp = sub.add_parser("spaces", help="list the shipped search spaces")
    sp.set_defaults(func=_cmd_spaces)

    r = sub.add_parser("report", help="Pareto table, CSV, plot and hypervolume of a study")
    _add_storage_args(r, study_required=True)
    r.add_argument("--out", default=None, help="folder for trials.csv, pareto.csv, pareto.png "
                   "(default: studies/STUDY/)")
    r.add_argument("--artifact-dir", default=None, metavar="DIR",
                   help="optuna-dashboard artifact folder for the plot and trials.csv (default: "
                        "$NAS_ARTIFACTS, else beside the storage file: studies/nas.db -> studies/nas-artifacts; "
                        "studies/artifacts for a database server)")
    r.set_defaults(func=_cmd_report)

    c = sub.add_parser("compare", help="several studies' fronts in one table and one plot, hypervolumes "
                                       "against one reference point")
    c.add_argument("--study", action="append", required=True, metavar="NAME",
                   help="a study to compare; give two or more")
    c.add_argument("--storage", default=os.environ.get("NAS_STORAGE"),
                   help="Optuna storage holding the studies (default: $NAS_STORAGE, else sqlite:///studies/nas.db)")
    c.add_argument("--out", default=None, help="folder for compare.csv and compare.png "
                   "(default: studies/compare-A-B-...)")
    c.add_argument("--allow-different-fidelity", action="store_true",
                   help="compare studies searched at different budgets (refused otherwise); the output says so")
    c.set_defaults(func=_cmd_compare)

    e = sub.add_parser("export", help="write a chosen architecture to YAML, with its metrics and provenance")
    _add_storage_args(e, study_required=True)
    e.add_argument("--pick", default="knee", help="knee (default), accuracy or smallest, from the Pareto front")
    e.add_argument("--max-macs", type=float, default=None, help="only front trials with at most this many MACs")
    e.add_argument("--trial", type=int, default=None, help="export this trial instead of picking")
    e.add_argument("-o", "--output", required=True, help="YAML file to write")
    e.set_defaults(func=_cmd_export)

    d = sub.add_parser("dashboard", help="serve optuna-dashboard for the storage (127.0.0.1 by default)")
    d.add_argument("--storage", default=os.environ.get("NAS_STORAGE"),
                   help="Optuna storage (default: $NAS_STORAGE, else sqlite:///studies/nas.db)")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--artifact-dir", default=None, metavar="DIR",
                   help="artifact folder written by report (default: as report's)")
    d.set_defaults(func=_cmd_dashboard)

    g = sub.add_parser("storage-proxy", help="serve a database storage as Optuna's gRPC storage proxy, for many "
                                             "workers (--storage grpc://HOST:PORT)",
                       description="Serve STORAGE through Optuna's gRPC storage proxy, so that many workers (on "
                                   "many machines) share this process's database connections: start this once, "
                                   "then run each worker with --storage grpc://HOST:PORT.")
    g.add_argument("--storage", default=os.environ.get("NAS_STORAGE"),
                   help="the database to serve: sqlite:///PATH.db or postgresql+psycopg2://USER:PASSWORD@HOST/DB "
                        "(default: $NAS_STORAGE, else sqlite:///studies/nas.db)")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every "
                        "interface: the proxy has no authentication, so only on a trusted network)")
    g.add_argument("--port", type=int, default=13000, help="port (default: 13000)")
    g.set_defaults(func=_cmd_storage_proxy)

    t = sub.add_parser("train", help="train the exact model of an architecture YAML at full budget",
                       description="Train the model a YAML describes on the training split; report validation "
                                   "and test accuracy; save a checkpoint and a results file next to the YAML.")
    t.add_argument("config", help="architecture YAML (from export, or written by hand)")
    t.add_argument("--epochs", type=float, default=None, help="training epochs (default: 50)")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.4)")
    t.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay on conv and linear weights (default: 5e-4)")
    t.add_argument("--seed", type=int, default=0,
                   help="initial weights and batch order (default: 0); the validation images do not depend on it")
    t.add_argument("--val-size", type=int, default=None,
                   help="validation images: promote's confirmation images, the same whatever --seed; they and as "
                        "many of the search's validation images are held out of training (default: 5000 each; 0: "
                        "none, train on all of them, as He et al. did for their CIFAR-10 test figures)")
    t.add_argument("--subset", type=int, default=None, help="train on a stratified subset of N images")
    t.add_argument("--output", default=None, help="checkpoint path (default: CONFIG with .pt)")
    _add_data_args(t)
    _add_runtime_args(t)
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("calibrate", help="measure how well the space's fidelity ranks architectures",
                       description="Train a sample of the space's architectures (or --configs) with several seeds "
                                   "at the space's fidelity and at a longer reference budget; compute zero-cost "
                                   "scores; print Kendall tau / Spearman rho of each against the reference and "
                                   "recommend the cheapest fidelity whose tau interval's lower end reaches --target. Every training is "
                                   "stored (study calibrate:SPACE), so an interrupted run resumes.")
    c.add_argument("--space", required=True, help="a shipped space or a YAML file")
    c.add_argument("--sample", type=int, default=8,
                   help="architectures drawn from the space: the attention-free baseline and N-1 spread over "
                        "the space's MACs range (default: 8)")
    c.add_argument("--configs", nargs="+", metavar="PATH", default=None,
                   help="architecture YAML files, or folders of them, to calibrate on instead of a sample")
    c.add_argument("--seeds", type=int, default=2, help="seeds per architecture and budget (default: 2)")
    c.add_argument("--reference-epochs", type=float, default=None,
                   help="epochs of the reference training (default: 10)")
    c.add_argument("--reference-subset", type=int, default=None,
                   help="training images of the reference (default: 20000; 0: all)")
    c.add_argument("--target", type=float, default=None,
                   help="Kendall tau the lower end of a fidelity's 90%% interval must reach to be recommended "
                        "(default: min(0.7, 0.8 x the reference's own seed-to-seed agreement))")
    c.add_argument("--epochs", type=float, default=None, help="override the space's budget (last rung) in epochs")
    c.add_argument("--subset", type=int, default=None, help="override the space's training subset size")
    c.add_argument("--val-size", type=int, default=None, help="override the space's validation size")
    c.add_argument("--write", action="store_true",
                   help="put the recommended fidelity and repeats into the space file")
    c.add_argument("--study", default=None, help="study name (default: calibrate:SPACE)")
    c.add_argument("--storage", default=os.environ.get("NAS_STORAGE"),
                   help="Optuna storage (default: $NAS_STORAGE, else sqlite:///studies/nas.db)")
    c.add_argument("--data", metavar="DIR", help="dataset folder (default: $NAS_DATA, then data/<dataset>)")
    _add_runtime_args(c)
    c.set_defaults(func=_cmd_calibrate)

    pr = sub.add_parser("promote", help="retrain a study's front (or top K, or chosen trials) and the baseline at "
                                        "full budget with seeds",
                        description="Retrain chosen architectures of study NAME with the train command's recipe "
                                    "and several seeds, beside the space's attention-free baseline; store every "
                                    "training in study NAME:promoted (resumable; report, export and the dashboard "
                                    "read it); print the promoted table, Kendall tau proxy vs promoted, and whether "
                                    "attention beats the baseline beyond noise.")
    _add_storage_args(pr, study_required=True)
    which = pr.add_mutually_exclusive_group()
    which.add_argument("--front", action="store_true", help="the proxy's Pareto front (the default)")
    which.add_argument("--top", type=int, metavar="K",
                       help="the K most accurate architectures by proxy accuracy, besides the baseline")
    which.add_argument("--trials", metavar="N,M,...", help="these trials of the study")
    _add_full_budget_args(pr, "architecture")
    pr.add_argument("--test", action="store_true",
                    help="add the promoted front's test accuracy (from the stored checkpoints; never used to choose)")
    pr.add_argument("--into", default=None, metavar="NAME", help="the promoted study (default: STUDY:promoted)")
    pr.add_argument("--artifact-dir", default=None, metavar="DIR",
                    help="where each training's checkpoint goes as an optuna-dashboard artifact (default: as "
                         "search's)")
    pr.add_argument("--data", metavar="DIR", help="dataset folder (default: $NAS_DATA, then data/<dataset>)")
    _add_runtime_args(pr)
    pr.set_defaults(func=_cmd_promote)

    ab = sub.add_parser("ablate", help="what the attention in each stage buys: the config with each stage's "
                                       "attention removed in turn, and the baseline",
                        description="Train CONFIG, CONFIG with each stage's attention removed in turn, and the "
                                    "attention-free baseline at the same budget and seeds; print per variant the "
                                    "accuracy, MACs, params and step time the removed attention accounts for. "
                                    "Stored in study ablate:CONFIG_NAME (resumable).")
    ab.add_argument("config", help="architecture YAML (e.g. from export)")
    _add_full_budget_args(ab, "variant")
    ab.add_argument("--study", default=None, help="study name (default: ablate:CONFIG_NAME)")
    ab.add_argument("--storage", default=os.environ.get("NAS_STORAGE"),
                    help="Optuna storage (default: $NAS_STORAGE, else sqlite:///studies/nas.db)")
    _add_data_args(ab)
    _add_runtime_args(ab)
    ab.set_defaults(func=_cmd_ablate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `search.py --space sk` is `search.py search --space sk`
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["search", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args) or 0
    except NasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------- search


def _override_fidelity(space, args: argparse.Namespace) -> None:
    """--epochs, --subset and --val-size of search and calibrate."""
    f = space.fidelity
    if args.epochs is not None:
        if args.epochs <= 0:
            raise NasError(f"--epochs: must be > 0, got {args.epochs:g}")
        if args.epochs <= f.warmup:
            raise NasError(f"--epochs: {args.epochs:g} must be longer than the space's warm-up "
                           f"(fidelity.warmup: {f.warmup:g} epochs)")
        f.rungs = [r for r in f.rungs if r < args.epochs] + [float(args.epochs)]
    if args.subset is not None:
        if args.subset < 1:
            raise NasError(f"--subset: must be >= 1, got {args.subset}")
        f.subset = args.subset
    if args.val_size is not None:
        if args.val_size < 1:
            raise NasError(f"--val-size: must be >= 1, got {args.val_size}")
        f.val_size = args.val_size


def _cmd_search(args: argparse.Namespace) -> int:
    from .report.note import refresh_note  # lazy: a command loads its modules when it runs
    from .search.results import (
        baseline_trial,
        format_front,
        pareto_front,
        study_seed_std,
    )  # lazy: a command loads its modules when it runs
    from .search.run import SearchRun, run_search  # lazy: a command loads its modules when it runs
    from .search.space import check_constraints, load_space  # lazy: a command loads its modules when it runs
    from .storage.backends import check_url, mask_url  # lazy: a command loads its modules when it runs
    from .storage.liveness import HEARTBEAT_INTERVAL  # lazy: a command loads its modules when it runs

    space = load_space(args.space, check=args.worker_index == 0)  # a worker we started: its parent checked it
    _override_fidelity(space, args)
    if args.trials is not None and args.trials < 1:
        raise NasError(f"--trials: must be >= 1, got {args.trials}")
    if args.timeout is not None and args.timeout < 0:
        raise NasError(f"--timeout: must be >= 0 seconds (0: no limit), got {args.timeout:g}")
    if args.workers < 1:
        raise NasError(f"--workers: must be >= 1, got {args.workers}")
    if args.heartbeat is not None and args.heartbeat < 1:
        raise NasError(f"--heartbeat: must be >= 1 second, got {args.heartbeat}")
    check_url(args.storage, args.workers)
    check_constraints(space)  # a ceiling nothing fits is refused before anything is stored
    study_name = args.study or space.name
    command = "python search.py " + " ".join(args.argv[1:] if args.argv[0] == "search" else args.argv)
    run = SearchRun(space=space, study_name=study_name, storage=args.storage, trials=args.trials,
                    timeout=args.timeout or None, seed=args.seed, data=args.data, device=args.device,
                    precision=args.precision, command=command, workers=args.workers,
                    worker_index=args.worker_index, heartbeat=args.heartbeat or HEARTBEAT_INTERVAL,
                    artifact_dir=args.artifact_dir, mix_numerics=args.mix_numerics, after_trial=(refresh_note,))
    try:
        if args.workers > 1 and args.worker_index == 0:
            from .search.workers import run_workers  # lazy: a command loads its modules when it runs

            study = run_workers(run, args)
        else:
            study = run_search(run, out=lambda line: print(line, flush=True))
    except KeyboardInterrupt as exc:
        from .search.objective import Terminated  # lazy: a command loads its modules when it runs

        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        if args.worker_index > 0:  # a worker of run_workers: the parent says how to resume
            print(f"{what}: the running trial is marked FAIL", flush=True)
            return 143 if isinstance(exc, Terminated) else 130
        print(f"\n{what}: the running trial is marked FAIL, finished trials are kept.\n"
              f"resume with: {mask_url(command)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    if args.worker_index > 0:
        return 0  # a worker started by run_workers: the parent prints the front
    front = pareto_front(study)
    print(f"\nPareto front of study {study_name!r} ({len(front)} of {len(study.trials)} trials):")
    print(format_front(front, study_seed_std(study), baseline_trial(study)) if front
          else "(no completed, trained trial yet)")
    storage = "" if not args.storage else f" --storage {mask_url(args.storage)}"
    print(f"next: python search.py report --study {study_name}{storage}    "
          f"python search.py export --study {study_name}{storage} --pick knee -o {study_name}-best.yaml")
    print(f"review: python search.py dashboard{storage}  (the study's note: front, hypervolume, baseline, how to "
          f"export the knee)")
    return 0


def _cmd_spaces(args: argparse.Namespace) -> int:
    from .search.space import load_space, space_names  # lazy: a command loads its modules when it runs

    names = space_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {load_space(name, check=False).description}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .report.compare import compare_studies  # lazy: a command loads its modules when it runs
    from .storage.backends import load_study  # lazy: a command loads its modules when it runs

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
    from .report.report import COST_UNITS  # lazy: a command loads its modules when it runs

    scale, _, unit = COST_UNITS[out["cost_objective"]]
    ref = out["reference"]
    print(f"hypervolume against one reference point (accuracy {ref[0]:g}, {ref[1] / scale:g}{unit}):")
    for name, hv in out["hypervolumes"].items():
        print(f"  {name}: {hv:.4f}")
    print(f"  merged front (*): {out['merged_hypervolume']:.4f}")
    print(f"wrote {out['csv']}, {out['plot']}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report.note import publish  # lazy: a command loads its modules when it runs
    from .report.report import write_report  # lazy: a command loads its modules when it runs
    from .storage.artifacts import artifact_dir  # lazy: a command loads its modules when it runs
    from .storage.backends import load_study, storage_for_reading  # lazy: a command loads its modules when it runs

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
            from .training.noise import marks_legend  # lazy: a command loads its modules when it runs

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


def _cmd_export(args: argparse.Namespace) -> int:
    from .report.export import export_trial, pick_trial  # lazy: a command loads its modules when it runs
    from .storage.backends import load_study, storage_for_reading  # lazy: a command loads its modules when it runs

    study = load_study(args.study, args.storage)
    trial = pick_trial(study, args.pick, args.max_macs, args.trial)
    out = export_trial(study, trial, args.output, storage_for_reading(args.storage, args.study))
    how = f"trial {trial.number}" if args.trial is not None else f"{args.pick} of the Pareto front: trial {trial.number}"
    print(f"exported {how} (val accuracy {out['val_accuracy']:.4f}, {out['macs'] / 1e6:.2f}M MACs, "
          f"{out['params']:,} params, hash {out['structure_hash']}) to {out['path']}")
    if args.trial is None and args.pick == "knee":
        print(_knee_note(study, trial, args.max_macs))
    print(f"retrain it: python search.py train {out['path']}")
    return 0


def _knee_note(study, knee, max_macs: float | None) -> str:
    """One line: what the knee was taken over (the attention designs of
    the front, the baseline left out), or that it is the baseline."""
    from .report.export import knee_candidates  # lazy: a command loads its modules when it runs
    from .search.results import is_baseline, pareto_front  # lazy: a command loads its modules when it runs

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


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server  # lazy: a command loads its modules when it runs

    from .storage.artifacts import artifact_dir, artifact_store  # lazy: a command loads its modules when it runs
    from .storage.backends import mask_url, open_storage  # lazy: a command loads its modules when it runs

    folder = artifact_dir(args.storage, args.artifact_dir)
    store = artifact_store(folder)
    storage = open_storage(args.storage)
    print(f"optuna-dashboard for {mask_url(args.storage or 'sqlite:///studies/nas.db')} with artifacts in {folder} "
          f"on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    try:
        run_server(storage, host=args.host, port=args.port, artifact_store=store)
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_storage_proxy(args: argparse.Namespace) -> int:
    import signal  # lazy: a command loads its modules when it runs

    from .search.objective import Terminated  # lazy: a command loads its modules when it runs
    from .storage.backends import serve_proxy  # lazy: a command loads its modules when it runs

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        serve_proxy(args.storage, args.host, args.port, out=lambda line: print(line, flush=True))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the database is untouched, workers reconnect to a new proxy
        print("storage proxy stopped", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


# --------------------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
    from .workflows.retrain import train_config  # lazy: a command loads its modules when it runs

    result = train_config(
        args.config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        seed=args.seed,
        val_size=args.val_size, subset=args.subset, data=args.data, dataset=args.dataset,
        device=args.device, precision=args.precision, output=args.output,
        progress=_progress_printer(), mix_numerics=args.mix_numerics,
    )
    val = "n/a (none held out)" if result["val_accuracy"] is None else f"{result['val_accuracy']:.4f}"
    print(f"validation accuracy {val}, test accuracy {result['test_accuracy']:.4f} "
          f"(with flip test-time augmentation {result['test_accuracy_flip_tta']:.4f}) "
          f"after {result['recipe']['epochs']:g} epochs in {result['train_seconds']:.0f} s "
          f"({result['images_per_second']:.0f} images/s, {result['precision']})")
    print(f"checkpoint: {result['checkpoint']}")
    print(f"results:    {result['results_file']}")
    if result.get("numerics"):
        print(f"numerics:   {result['numerics']['plan_file']} (kernel choices kept for every train of this config "
              f"on this kind of machine)")
    return 0


def _progress_printer():
    """A tqdm bar with ETA on a terminal; plain lines every ~5 % otherwise
    (logs and CI capture)."""
    # the clock starts when training starts (the first call), and the first
    # line waits until a rate is known, so no line claims "eta 0s"
    state: dict = {"next": None}

    def update(step: int, total: int, loss: float) -> None:
        if sys.stderr.isatty():
            if "bar" not in state:
                from tqdm import tqdm  # lazy: a command loads its modules when it runs
                state["bar"] = tqdm(total=total, unit="step", dynamic_ncols=True)
            bar = state["bar"]
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.3f}")
            if step >= total:
                bar.close()
            return
        if state["next"] is None:
            state.update(start=time.perf_counter(), first=step, next=step + max(1, total // 20))
            if step < total:
                return
            state["first"] = 0
        if step >= state["next"] or step >= total:
            elapsed = time.perf_counter() - state["start"]
            eta = elapsed / (step - state["first"]) * (total - step)
            print(f"step {step}/{total}  loss {loss:.3f}  elapsed {elapsed:.0f}s  eta {eta:.0f}s", file=sys.stderr,
                  flush=True)
            state["next"] = step + max(1, total // 20)

    return update


# --------------------------------------------------------------------------- many trainings: calibrate, promote, ablate


def _interruptible(run: Callable[[], object], study: str, command: str) -> object | None:
    """Run ``run()``; Ctrl-C or SIGTERM stores the running training as FAIL
    and says how to resume (None returned)."""
    import signal  # lazy: a command loads its modules when it runs

    from .storage.backends import mask_url  # lazy: a command loads its modules when it runs

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return run()
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished trainings are stored in study {study!r}.\nresume with: {mask_url(command)}",
              file=sys.stderr)
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .model.config import load_config  # lazy: a command loads its modules when it runs
    from .search.space import load_space  # lazy: a command loads its modules when it runs
    from .storage.backends import check_url  # lazy: a command loads its modules when it runs
    from .workflows.calibrate import (
        MAX_SEEDS,
        REFERENCE_EPOCHS,
        REFERENCE_SUBSET,
        CalibrationRun,
        format_calibration,
        run_calibration,
        writable_space_file,
        write_fidelity,
    )  # lazy: a command loads its modules when it runs

    space = load_space(args.space)
    _override_fidelity(space, args)
    if args.sample < 2:
        raise NasError(f"--sample: must be >= 2 (a ranking needs two architectures), got {args.sample}")
    if not 1 <= args.seeds <= MAX_SEEDS:
        raise NasError(f"--seeds: must be 1 to {MAX_SEEDS}, got {args.seeds}")
    if args.target is not None and not -1 < args.target <= 1:
        raise NasError(f"--target: a Kendall tau in (-1, 1], got {args.target:g}")
    reference_epochs = REFERENCE_EPOCHS if args.reference_epochs is None else args.reference_epochs
    if not reference_epochs > space.fidelity.warmup:
        raise NasError(f"--reference-epochs: must be longer than the space's warm-up "
                       f"({space.fidelity.warmup:g} epochs), got {reference_epochs:g}")
    reference_subset = REFERENCE_SUBSET if args.reference_subset is None else args.reference_subset
    if reference_subset < 0:
        raise NasError(f"--reference-subset: must be >= 1 (0: all training images), got {reference_subset}")
    configs = None
    if args.configs:
        configs = []
        for item in args.configs:
            path = Path(item)
            files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
            if not files:
                raise NasError(f"--configs: no *.yaml file in folder {path}")
            for file in files:
                if not file.is_file():
                    raise NasError(f"--configs: file not found: {file}")
                configs.append((str(file), load_config(file)))
    if args.write:
        writable_space_file(space)
    check_url(args.storage, 1)
    command = "python search.py " + " ".join(args.argv)
    run = CalibrationRun(space=space, study_name=args.study or f"calibrate:{space.name}", storage=args.storage,
                         sample=args.sample, configs=configs, seeds=args.seeds, reference_epochs=reference_epochs,
                         reference_subset=reference_subset or None, target=args.target, data=args.data,
                         device=args.device, precision=args.precision, command=command,
                         progress=_progress_printer, mix_numerics=args.mix_numerics)
    result = _interruptible(lambda: run_calibration(run, out=lambda line: print(line, flush=True)),
                            run.study_name, command)
    if result is None:
        return 130
    print(format_calibration(result))
    if args.write:
        if result.recommendation is None:
            print("--write: nothing written (no recommendation)")
        else:
            row, k = result.recommendation
            note = (f"calibrated {time.strftime('%Y-%m-%d')}: tau {row.taus[k - 1]:+.3f} against "
                    f"{result.reference.subset or 'all'} images x {result.reference.epochs:g} epochs "
                    f"({len(result.architectures)} architectures, {len(result.seeds)} seeds)")
            path = write_fidelity(space, row, k, note)
            print(f"wrote the fidelity ({row.name}, repeats {k}) into {path}")
    return 0


# --------------------------------------------------------------------------- promote, ablate


def _cmd_promote(args: argparse.Namespace) -> int:
    from .storage.backends import check_url  # lazy: a command loads its modules when it runs
    from .training.evaluate import check_budget_args  # lazy: a command loads its modules when it runs
    from .workflows.promote import (
        PROMOTED,
        SUFFIX,
        PromotionRun,
        format_promotion,
        run_promotion,
    )  # lazy: a command loads its modules when it runs

    check_budget_args(args.epochs, args.subset, args.val_size, args.seeds)
    which, top, numbers = "front", None, None
    if args.top is not None:
        if args.top < 1:
            raise NasError(f"--top: must be >= 1, got {args.top}")
        which, top = "top", args.top
    elif args.trials is not None:
        try:
            numbers = [int(n) for n in args.trials.split(",") if n.strip()]
        except ValueError:
            raise NasError(f"--trials: a comma-separated list of trial numbers, got {args.trials!r}") from None
        if not numbers:
            raise NasError("--trials: give at least one trial number")
        which = "trials"
    check_url(args.storage, 1)
    from .storage.backends import load_study  # lazy: a command loads its modules when it runs

    proxy = load_study(args.study, args.storage)
    if proxy.user_attrs.get("kind") != PROMOTED:  # else run_promotion says what to promote instead
        args.val_size = _default_as_none(args.val_size, None, args.data, study=proxy)
        print(_promote_estimate(proxy, which, top, numbers, args), flush=True)
    command = "python search.py " + " ".join(args.argv)
    run = PromotionRun(study_name=args.study, storage=args.storage, which=which, top=top, trials=numbers,
                       seeds=args.seeds, epochs=args.epochs, subset=args.subset, val_size=args.val_size,
                       test=args.test, into=args.into, data=args.data, device=args.device, precision=args.precision,
                       artifact_dir=args.artifact_dir, command=command, progress=_progress_printer, mix_numerics=args.mix_numerics)
    result = _interruptible(lambda: run_promotion(run, out=lambda line: print(line, flush=True)),
                            args.into or args.study + SUFFIX, command)
    if result is None:
        return 130
    print(format_promotion(result))
    from .storage.backends import mask_url  # lazy: a command loads its modules when it runs

    storage = "" if not args.storage else f" --storage {mask_url(args.storage)}"
    name = result.study.study_name
    print(f"next: python search.py report --study {name}{storage}    "
          f"python search.py export --study {name}{storage} --pick knee -o {name.replace(':', '-')}-best.yaml")
    return 0


def _check_has_attention(config: str) -> None:
    """ablate of an attention-free config (the baseline, e.g. what an old
    ``export --pick knee`` chose) is refused in one line that says what to
    ablate instead."""
    from .model.config import load_config  # lazy: a command loads its modules when it runs

    cfg = load_config(config)
    if all(s.transition is None or s.transition.type == "none" for s in cfg.stages) and all(
            b.attention.type == "none" for _, _, b in cfg.blocks()):
        study = ((cfg.meta or {}).get("provenance") or {}).get("study") or "STUDY"
        raise NasError(f"{config}: the config has no attention in any stage (the attention-free baseline); nothing "
                       f"to ablate: export an attention design and ablate that (python search.py export --study "
                       f"{study} --pick knee -o best.yaml takes the knee of the front's attention designs; --trial N "
                       f"picks one)")


def _default_as_none(val_size: int | None, dataset: str | None, data: str | None, *, config: str | None = None,
                     study=None) -> int | None:
    """--val-size of promote and ablate: None (the default) when it equals
    the default for the dataset (5,000, a tenth of a smaller training set),
    so an explicit default is the same budget as none given (a resumed
    promote or ablate is not refused as "another budget"). The dataset: its
    name from --dataset, else the config's meta.dataset (ablate) or the
    study's space (promote); its size from the (cached) images."""
    from .training.splits import DEFAULT_VAL_SIZE  # lazy: a command loads its modules when it runs

    if val_size is None or not 1 <= val_size <= DEFAULT_VAL_SIZE:  # the default is never outside that
        return val_size
    if dataset is None and config is not None:
        from .model.config import load_config  # lazy: a command loads its modules when it runs

        dataset = load_config(config).meta.get("dataset")
    if dataset is None and study is not None:
        from .workflows.promote import space_of  # lazy: a command loads its modules when it runs

        dataset = space_of(study).fidelity.dataset
    return None if val_size == default_val_size_of(dataset or "cifar10", data) else val_size


def default_val_size_of(dataset: str, data: str | None) -> int:
    """The default number of validation images of ``dataset`` (read from
    ``data``, or its default folder)."""
    from .training.splits import default_val_size  # lazy: a command loads its modules when it runs

    return default_val_size(_num_train(dataset, data))


@functools.lru_cache(maxsize=4)
def _num_train(dataset: str, data: str | None) -> int:
    """How many training images ``dataset`` has (its cached tensors, loaded
    once more: promote and ablate load them again themselves)."""
    from .training.datasets import load_dataset  # lazy: a command loads its modules when it runs

    return len(load_dataset(dataset, data).train_labels)


def _promote_estimate(proxy, which: str, top: int | None, numbers: list[int] | None,
                      args: argparse.Namespace) -> str:
    """One line before promote trains: its budget and about how long it
    takes, from the training speed (images/s) the search measured for each
    architecture (the median of them for one it did not train)."""
    import statistics  # lazy: a command loads its modules when it runs

    from .training.splits import default_val_size  # lazy: a command loads its modules when it runs
    from .training.train import Recipe  # lazy: a command loads its modules when it runs
    from .workflows.promote import select_candidates, space_of  # lazy: a command loads its modules when it runs

    dataset = space_of(proxy).fidelity.dataset
    candidates = select_candidates(proxy, which, top, numbers)
    n = _num_train(dataset, args.data)
    images = args.subset or n - 2 * (args.val_size or default_val_size(n))  # both held-out splits
    epochs = Recipe().epochs if args.epochs is None else args.epochs
    budget = (f"{len(candidates)} architectures x {args.seeds} seeds x {epochs:g} epochs x {images:,} images "
              f"= {len(candidates) * args.seeds * epochs * images:,.0f} images trained")
    speeds = {id(c): c.proxy.user_attrs.get("images_per_second") for c in candidates if c.proxy is not None}
    known = [v for v in speeds.values() if v]
    if not known:
        return f"promote budget: {budget} (the search recorded no training speed to estimate the time from)"
    typical = statistics.median(known)
    seconds = sum(args.seeds * epochs * images / (speeds.get(id(c)) or typical) for c in candidates)
    return (f"promote budget: {budget}; about {_duration(seconds)} of training at the speeds the search measured "
            f"({min(known):.0f}-{max(known):.0f} images/s; trainings stored already are not trained again; "
            f"--epochs, --subset and --seeds make it shorter)")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _cmd_ablate(args: argparse.Namespace) -> int:
    from .storage.backends import check_url  # lazy: a command loads its modules when it runs
    from .training.evaluate import check_budget_args  # lazy: a command loads its modules when it runs
    from .workflows.ablate import ABLATE, AblationRun, format_ablation, run_ablation  # lazy: a command loads its modules when it runs

    check_budget_args(args.epochs, args.subset, args.val_size, args.seeds)
    if not Path(args.config).is_file():
        raise NasError(f"config file not found: {args.config}")
    _check_has_attention(args.config)
    args.val_size = _default_as_none(args.val_size, args.dataset, args.data, config=args.config)
    check_url(args.storage, 1)
    command = "python search.py " + " ".join(args.argv)
    run = AblationRun(config=args.config, storage=args.storage, study_name=args.study, seeds=args.seeds,
                      epochs=args.epochs, subset=args.subset, val_size=args.val_size, data=args.data,
                      dataset=args.dataset, device=args.device, precision=args.precision, command=command,
                      progress=_progress_printer, mix_numerics=args.mix_numerics)
    result = _interruptible(lambda: run_ablation(run, out=lambda line: print(line, flush=True)),
                            args.study or f"{ABLATE}:{Path(args.config).stem}", command)
    if result is None:
        return 130
    print(format_ablation(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
