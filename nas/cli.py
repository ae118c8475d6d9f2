"""Command line: ``python search.py COMMAND ...``.

Every user mistake surfaces as :class:`~nas.errors.NasError` and becomes one
line on stderr with exit code 2; anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import NasError


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: $NAS_DATA, then data/<dataset>)")
    p.add_argument("--dataset", default=None, help="cifar10, cifar100 or imagefolder (default: from the config's "
                   "meta.dataset, else cifar10)")


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", help="auto (bf16 where the hardware has it), fp32, bf16, fp16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="search.py", description="Attention-aware neural architecture search.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train the exact model of an architecture YAML at full budget",
                       description="Train the model a YAML describes on the training split; report validation "
                                   "and test accuracy; save a checkpoint and a results file next to the YAML.")
    t.add_argument("config", help="architecture YAML (from export, or written by hand)")
    t.add_argument("--epochs", type=float, default=None, help="training epochs (default: 50)")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None, help="peak learning rate")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-size", type=int, default=None, help="validation images held out of train")
    t.add_argument("--subset", type=int, default=None, help="train on a stratified subset of N images")
    t.add_argument("--output", default=None, help="checkpoint path (default: CONFIG with .pt)")
    _add_data_args(t)
    _add_runtime_args(t)
    t.set_defaults(func=_cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("error: a command is required; allowed: train", file=sys.stderr)
        return 2
    try:
        return args.func(args) or 0
    except NasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
    from .retrain import train_config

    result = train_config(
        args.config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        val_size=args.val_size, subset=args.subset, data=args.data, dataset=args.dataset,
        device=args.device, precision=args.precision, output=args.output,
        progress=_progress_printer(),
    )
    print(f"validation accuracy {result['val_accuracy']:.4f}, test accuracy {result['test_accuracy']:.4f} "
          f"after {result['epochs']:g} epochs in {result['train_seconds']:.0f} s "
          f"({result['images_per_second']:.0f} images/s, {result['precision']})")
    print(f"checkpoint: {result['checkpoint']}")
    print(f"results:    {result['results_file']}")
    return 0


def _progress_printer():
    """A tqdm bar with ETA on a terminal; plain lines every ~5 % otherwise
    (logs and CI capture)."""
    state: dict = {}

    def update(step: int, total: int, loss: float) -> None:
        if sys.stderr.isatty():
            if "bar" not in state:
                from tqdm import tqdm
                state["bar"] = tqdm(total=total, unit="step", dynamic_ncols=True)
            bar = state["bar"]
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.3f}")
            if step >= total:
                bar.close()
            return
        start = state.setdefault("start", time.perf_counter())
        due = state.get("next", 0)
        if step >= due or step >= total:
            elapsed = time.perf_counter() - start
            eta = elapsed / step * (total - step) if step else 0
            print(f"step {step}/{total}  loss {loss:.3f}  elapsed {elapsed:.0f}s  eta {eta:.0f}s", file=sys.stderr,
                  flush=True)
            state["next"] = step + max(1, total // 20)

    return update


if __name__ == "__main__":
    sys.exit(main())
