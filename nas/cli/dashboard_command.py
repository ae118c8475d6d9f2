"""``search.py dashboard``: optuna-dashboard for the storage."""
from __future__ import annotations

import argparse

from ._options import Command, add_artifact_dir, add_storage


def add_arguments(d: argparse.ArgumentParser) -> None:
    add_storage(d)
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    d.add_argument("--port", type=int, default=8080)
    add_artifact_dir(d, "artifact folder written by report (default: as report's)")


def run(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server  # lazy: a command loads its modules when it runs

    from ..storage.artifacts import artifact_dir, artifact_store  # lazy: a command loads its modules when it runs
    from ..storage.backends import mask_url, open_storage  # lazy: a command loads its modules when it runs

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


COMMAND = Command("dashboard", add_arguments=add_arguments, run=run,
                  help="serve optuna-dashboard for the storage (127.0.0.1 by default)")
