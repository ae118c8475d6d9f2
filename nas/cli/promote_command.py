"""``search.py promote``: a study's front (or top K, or chosen trials) and the
baseline, retrained at full budget with seeds."""
from __future__ import annotations

import argparse

from ..errors import NasError
from ._common import default_as_none, interruptible, num_train, progress_printer
from ._options import Command, add_artifact_dir, add_data, add_full_budget, add_runtime, add_study


def add_arguments(pr: argparse.ArgumentParser) -> None:
    add_study(pr)
    which = pr.add_mutually_exclusive_group()
    which.add_argument("--front", action="store_true", help="the proxy's Pareto front (the default)")
    which.add_argument("--top", type=int, metavar="K",
                       help="the K most accurate architectures by proxy accuracy, besides the baseline")
    which.add_argument("--trials", metavar="N,M,...", help="these trials of the study")
    add_full_budget(pr, "architecture")
    pr.add_argument("--test", action="store_true",
                    help="add the promoted front's test accuracy (from the stored checkpoints; never used to choose)")
    pr.add_argument("--into", default=None, metavar="NAME", help="the promoted study (default: STUDY:promoted)")
    add_artifact_dir(pr, "where each training's checkpoint goes as an optuna-dashboard artifact (default: as search's)")
    add_data(pr)
    add_runtime(pr)


def run(args: argparse.Namespace) -> int:
    from ..storage.backends import check_url  # lazy: a command loads its modules when it runs
    from ..training.evaluate import check_budget_args  # lazy: a command loads its modules when it runs
    from ..workflows.promote import (
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
    from ..storage.backends import load_study  # lazy: a command loads its modules when it runs

    proxy = load_study(args.study, args.storage)
    if proxy.user_attrs.get("kind") != PROMOTED:  # else run_promotion says what to promote instead
        args.val_size = default_as_none(args.val_size, None, args.data, study=proxy)
        print(promote_estimate(proxy, which, top, numbers, args), flush=True)
    command = "python search.py " + " ".join(args.argv)
    run = PromotionRun(study_name=args.study, storage=args.storage, which=which, top=top, trials=numbers,
                       seeds=args.seeds, epochs=args.epochs, subset=args.subset, val_size=args.val_size,
                       test=args.test, into=args.into, data=args.data, device=args.device, precision=args.precision,
                       artifact_dir=args.artifact_dir, command=command, progress=progress_printer,
                       mix_numerics=args.mix_numerics)
    result = interruptible(lambda: run_promotion(run, out=lambda line: print(line, flush=True)),
                           args.into or args.study + SUFFIX, command)
    if result is None:
        return 130
    print(format_promotion(result))
    from ..storage.backends import mask_url  # lazy: a command loads its modules when it runs

    storage = "" if not args.storage else f" --storage {mask_url(args.storage)}"
    name = result.study.study_name
    print(f"next: python search.py report --study {name}{storage}    "
          f"python search.py export --study {name}{storage} --pick knee -o {name.replace(':', '-')}-best.yaml")
    return 0


def promote_estimate(proxy, which: str, top: int | None, numbers: list[int] | None,
                     args: argparse.Namespace) -> str:
    """One line before promote trains: its budget and about how long it
    takes, from the training speed (images/s) the search measured for each
    architecture (the median of them for one it did not train)."""
    import statistics  # lazy: a command loads its modules when it runs

    from ..training.splits import default_val_size  # lazy: a command loads its modules when it runs
    from ..training.train import Recipe  # lazy: a command loads its modules when it runs
    from ..workflows.promote import select_candidates, space_of  # lazy: a command loads its modules when it runs

    dataset = space_of(proxy).fidelity.dataset
    candidates = select_candidates(proxy, which, top, numbers)
    n = num_train(dataset, args.data)
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
    return (f"promote budget: {budget}; about {duration(seconds)} of training at the speeds the search measured "
            f"({min(known):.0f}-{max(known):.0f} images/s; trainings stored already are not trained again; "
            f"--epochs, --subset and --seeds make it shorter)")


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


COMMAND = Command(
    "promote", add_arguments=add_arguments, run=run,
    help="retrain a study's front (or top K, or chosen trials) and the baseline at full budget with seeds",
    description="Retrain chosen architectures of study NAME with the train command's recipe and several seeds, "
                "beside the space's attention-free baseline; store every training in study NAME:promoted "
                "(resumable; report, export and the dashboard read it); print the promoted table, Kendall tau proxy "
                "vs promoted, and whether attention beats the baseline beyond noise.")
