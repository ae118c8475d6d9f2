"""``search.py calibrate``: how well the space's fidelity ranks architectures."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import NasError
from ._common import interruptible, override_fidelity, progress_printer
from ._options import Command, add_data, add_fidelity_overrides, add_runtime, add_study


def add_arguments(c: argparse.ArgumentParser) -> None:
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
    add_fidelity_overrides(c)
    c.add_argument("--write", action="store_true",
                   help="put the recommended fidelity and repeats into the space file")
    add_study(c, default="calibrate:SPACE", storage="Optuna storage")
    add_data(c)
    add_runtime(c)


def run(args: argparse.Namespace) -> int:
    from ..model.config import load_config  # lazy: a command loads its modules when it runs
    from ..search.space import load_space  # lazy: a command loads its modules when it runs
    from ..storage.backends import check_url  # lazy: a command loads its modules when it runs
    from ..workflows.calibrate import (
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
    override_fidelity(space, args)
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
                         progress=progress_printer, mix_numerics=args.mix_numerics)
    result = interruptible(lambda: run_calibration(run, out=lambda line: print(line, flush=True)),
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


COMMAND = Command(
    "calibrate", add_arguments=add_arguments, run=run,
    help="measure how well the space's fidelity ranks architectures",
    description="Train a sample of the space's architectures (or --configs) with several seeds at the space's "
                "fidelity and at a longer reference budget; compute zero-cost scores; print Kendall tau / Spearman "
                "rho of each against the reference and recommend the cheapest fidelity whose tau interval's lower "
                "end reaches --target. Every training is stored (study calibrate:SPACE), so an interrupted run "
                "resumes.")
