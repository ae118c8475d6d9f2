"""Command line: ``python search.py COMMAND ...``.

Every command is one module here holding its options (``add_arguments``)
and its action (``run``), registered in :data:`TABLE`; the option groups
several commands share are defined once in ``_options.py``. A command's
modules (torch, optuna, the rest of ``nas``) load inside its ``run``, so
``--help`` and ``spaces`` stay quick.

Every user mistake surfaces as :class:`~nas.errors.NasError` and becomes one
line on stderr with exit code 2; anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import NasError
from . import (
    ablate_command,
    calibrate_command,
    compare_command,
    dashboard_command,
    export_command,
    promote_command,
    report_command,
    search_command,
    spaces_command,
    storage_proxy_command,
    train_command,
)
from ._common import default_as_none as _default_as_none  # noqa: F401  (tests import these names from nas.cli)
from ._common import default_val_size_of  # noqa: F401
from ._common import override_fidelity as _override_fidelity  # noqa: F401
from ._options import Command

#: every command by name, in the order ``search.py --help`` lists them; a
#: command line that starts with none of them is ``search``'s
TABLE: dict[str, Command] = {command.name: command for command in (
    search_command.COMMAND,
    spaces_command.COMMAND,
    report_command.COMMAND,
    compare_command.COMMAND,
    export_command.COMMAND,
    dashboard_command.COMMAND,
    storage_proxy_command.COMMAND,
    train_command.COMMAND,
    calibrate_command.COMMAND,
    promote_command.COMMAND,
    ablate_command.COMMAND,
)}
DEFAULT = "search"
COMMANDS = tuple(TABLE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="search.py", description="Attention-aware neural architecture search. Without a command: "
        "`search.py --space NAME ...` runs the search.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in TABLE.values():
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `search.py --space sk` is `search.py search --space sk`
    if not argv or (argv[0] not in TABLE and argv[0] not in ("-h", "--help")):
        argv = [DEFAULT, *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.func(args) or 0
    except NasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
