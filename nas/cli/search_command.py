"""``search.py search`` (the default command): run or resume a search."""
from __future__ import annotations

import argparse
import sys

from ..errors import NasError
from ._common import override_fidelity
from ._options import (
    ARTIFACTS_DEFAULT,
    Command,
    add_artifact_dir,
    add_data,
    add_fidelity_overrides,
    add_runtime,
    add_study,
)


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--space", required=True, help="a shipped space (see `search.py spaces`) or a YAML file")
    add_study(s, default="the space's name")
    s.add_argument("--trials", type=int, default=100, help="stop after this many more trials (default: 100)")
    s.add_argument("--timeout", type=float, default=1800,
                   help="stop starting trials after this many seconds (default: 1800; 0: no limit)")
    s.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")
    add_fidelity_overrides(s)
    add_data(s)
    s.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine, each with cores/N threads (default: 1); with N > 1 "
                        "the default storage is the journal file studies/nas.journal")
    s.add_argument("--heartbeat", type=int, default=None, metavar="SECONDS",
                   help="heartbeat interval on database storages; a trial silent for 3x this long (at least "
                        "180 s) is failed and retried (default: 60)")
    add_artifact_dir(s, "optuna-dashboard artifact folder, where each completed trial's config goes (default: "
                        f"{ARTIFACTS_DEFAULT} or proxy)")
    s.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)  # set for the workers we start
    add_runtime(s)


def run(args: argparse.Namespace) -> int:
    from ..report.note import refresh_note  # lazy: a command loads its modules when it runs
    from ..search.results import (
        baseline_trial,
        format_front,
        pareto_front,
        study_seed_std,
    )  # lazy: a command loads its modules when it runs
    from ..search.run import SearchRun, run_search  # lazy: a command loads its modules when it runs
    from ..search.space import check_constraints, load_space  # lazy: a command loads its modules when it runs
    from ..storage.backends import check_url, mask_url  # lazy: a command loads its modules when it runs
    from ..storage.liveness import HEARTBEAT_INTERVAL  # lazy: a command loads its modules when it runs

    space = load_space(args.space, check=args.worker_index == 0)  # a worker we started: its parent checked it
    override_fidelity(space, args)
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
            from ..search.workers import run_workers  # lazy: a command loads its modules when it runs

            study = run_workers(run, args)
        else:
            study = run_search(run, out=lambda line: print(line, flush=True))
    except KeyboardInterrupt as exc:
        from ..search.objective import Terminated  # lazy: a command loads its modules when it runs

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


COMMAND = Command(
    "search", add_arguments=add_arguments, run=run,
    help="run or resume a search (the default command)",
    description="Run or resume study NAME (default: the space's name): sample architectures from the space, train "
                "each on the proxy budget with Pareto-aware halving, and print the Pareto front of validation "
                "accuracy against MACs.")
