"""``search.py ablate``: what the attention in each stage of a config buys."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import NasError
from ._common import default_as_none, interruptible, progress_printer
from ._options import Command, add_data, add_full_budget, add_runtime, add_study


def add_arguments(ab: argparse.ArgumentParser) -> None:
    ab.add_argument("config", help="architecture YAML (e.g. from export)")
    add_full_budget(ab, "variant")
    add_study(ab, default="ablate:CONFIG_NAME", storage="Optuna storage")
    add_data(ab, dataset=True)
    add_runtime(ab)


def run(args: argparse.Namespace) -> int:
    from ..storage.backends import check_url  # lazy: a command loads its modules when it runs
    from ..training.evaluate import check_budget_args  # lazy: a command loads its modules when it runs
    from ..workflows.ablate import (
        ABLATE,
        AblationRun,
        format_ablation,
        run_ablation,
    )  # lazy: a command loads its modules when it runs

    check_budget_args(args.epochs, args.subset, args.val_size, args.seeds)
    if not Path(args.config).is_file():
        raise NasError(f"config file not found: {args.config}")
    check_has_attention(args.config)
    args.val_size = default_as_none(args.val_size, args.dataset, args.data, config=args.config)
    check_url(args.storage, 1)
    command = "python search.py " + " ".join(args.argv)
    run = AblationRun(config=args.config, storage=args.storage, study_name=args.study, seeds=args.seeds,
                      epochs=args.epochs, subset=args.subset, val_size=args.val_size, data=args.data,
                      dataset=args.dataset, device=args.device, precision=args.precision, command=command,
                      progress=progress_printer, mix_numerics=args.mix_numerics)
    result = interruptible(lambda: run_ablation(run, out=lambda line: print(line, flush=True)),
                           args.study or f"{ABLATE}:{Path(args.config).stem}", command)
    if result is None:
        return 130
    print(format_ablation(result))
    return 0


def check_has_attention(config: str) -> None:
    """ablate of an attention-free config (the baseline, e.g. what an old
    ``export --pick knee`` chose) is refused in one line that says what to
    ablate instead."""
    from ..model.config import load_config  # lazy: a command loads its modules when it runs

    cfg = load_config(config)
    if all(s.transition is None or s.transition.type == "none" for s in cfg.stages) and all(
            b.attention.type == "none" for _, _, b in cfg.blocks()):
        study = ((cfg.meta or {}).get("provenance") or {}).get("study") or "STUDY"
        raise NasError(f"{config}: the config has no attention in any stage (the attention-free baseline); nothing "
                       f"to ablate: export an attention design and ablate that (python search.py export --study "
                       f"{study} --pick knee -o best.yaml takes the knee of the front's attention designs; --trial N "
                       f"picks one)")


COMMAND = Command(
    "ablate", add_arguments=add_arguments, run=run,
    help="what the attention in each stage buys: the config with each stage's attention removed in turn, and the "
         "baseline",
    description="Train CONFIG, CONFIG with each stage's attention removed in turn, and the attention-free baseline "
                "at the same budget and seeds; print per variant the accuracy, MACs, params and step time the "
                "removed attention accounts for. Stored in study ablate:CONFIG_NAME (resumable).")
