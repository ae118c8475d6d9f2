"""What every command is made of: the :class:`Command` record the table in
:mod:`nas.cli` holds, and the option groups several commands share, each
defined once here (name, default, metavar and help)."""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One command: its name, its line in ``search.py --help`` (and the longer
    description of ``search.py NAME --help``), the options it takes and what
    it does. ``run`` gets the parsed arguments and returns the exit code; a
    user mistake is a :class:`~nas.errors.NasError`."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


def no_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a command that takes none."""


# --------------------------------------------------------------------------- study and storage

STORAGE_URLS = ("Optuna storage: sqlite:///PATH.db, postgresql+psycopg2://USER:PASSWORD@HOST/DB, grpc://HOST:PORT "
                "(a storage-proxy) or a *.journal file")


def add_storage(p: argparse.ArgumentParser, what: str = "Optuna storage") -> None:
    """--storage: ``what`` it is, then where it defaults to."""
    p.add_argument("--storage", default=os.environ.get("NAS_STORAGE"),
                   help=f"{what} (default: $NAS_STORAGE, else sqlite:///studies/nas.db)")


def add_study(p: argparse.ArgumentParser, default: str | None = None, storage: str = STORAGE_URLS) -> None:
    """--study (required where it has no ``default``) and --storage."""
    p.add_argument("--study", required=default is None, default=None,
                   help="study name" + ("" if default is None else f" (default: {default})"))
    add_storage(p, storage)


ARTIFACTS_DEFAULT = ("$NAS_ARTIFACTS, else beside the storage file: studies/nas.db -> studies/nas-artifacts; "
                     "studies/artifacts for a database server")


def add_artifact_dir(p: argparse.ArgumentParser, help: str) -> None:
    """--artifact-dir: ``help`` says what goes there for the command."""
    p.add_argument("--artifact-dir", default=None, metavar="DIR", help=help)


# --------------------------------------------------------------------------- data, budget, runtime


def add_data(p: argparse.ArgumentParser, dataset: bool = False) -> None:
    """--data and (``dataset``) --dataset."""
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: $NAS_DATA, then data/<dataset>)")
    if dataset:
        p.add_argument("--dataset", default=None, help="cifar10, cifar100 or imagefolder (default: from the config's "
                       "meta.dataset, else cifar10)")


def add_fidelity_overrides(p: argparse.ArgumentParser) -> None:
    """--epochs, --subset and --val-size of search and calibrate: the space's
    fidelity, overridden."""
    p.add_argument("--epochs", type=float, default=None, help="override the space's budget (last rung) in epochs")
    p.add_argument("--subset", type=int, default=None, help="override the space's training subset size")
    p.add_argument("--val-size", type=int, default=None, help="override the space's validation size")


def add_full_budget(p: argparse.ArgumentParser, per: str) -> None:
    """The budget options of promote and ablate (the train command's recipe)."""
    p.add_argument("--seeds", type=int, default=2, help=f"seeds per {per} (default: 2)")
    p.add_argument("--epochs", type=float, default=None, help="training epochs (default: 50, as train)")
    p.add_argument("--subset", type=int, default=None,
                   help="train on a stratified subset of N images (default: all but the validation images)")
    p.add_argument("--val-size", type=int, default=None, help="validation images (default: 5000)")


def add_runtime(p: argparse.ArgumentParser) -> None:
    """--device, --precision and --mix-numerics."""
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", help="auto (bf16 where the hardware has it), fp32, bf16, fp16")
    p.add_argument("--mix-numerics", action="store_true",
                   help="resume or join a study whose kernel choices (the numerics every trial trains with) "
                        "were measured on another kind of machine: this one measures its own, each trial "
                        "records them (default: refused in one line)")
