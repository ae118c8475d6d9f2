"""``search.py spaces``: list the shipped search spaces."""
from __future__ import annotations

import argparse

from ._options import Command, no_arguments


def run(args: argparse.Namespace) -> int:
    from ..search.space import load_space, space_names  # lazy: a command loads its modules when it runs

    names = space_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {load_space(name, check=False).description}")
    return 0


COMMAND = Command("spaces", add_arguments=no_arguments, run=run, help="list the shipped search spaces")
