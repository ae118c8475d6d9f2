"""``search.py storage-proxy``: a database storage served as Optuna's gRPC storage proxy."""
from __future__ import annotations

import argparse

from ._options import Command, add_storage


def add_arguments(g: argparse.ArgumentParser) -> None:
    add_storage(g, "the database to serve: sqlite:///PATH.db or postgresql+psycopg2://USER:PASSWORD@HOST/DB")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every "
                        "interface: the proxy has no authentication, so only on a trusted network)")
    g.add_argument("--port", type=int, default=13000, help="port (default: 13000)")


def run(args: argparse.Namespace) -> int:
    import signal  # lazy: a command loads its modules when it runs

    from ..search.objective import Terminated  # lazy: a command loads its modules when it runs
    from ..storage.backends import serve_proxy  # lazy: a command loads its modules when it runs

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


COMMAND = Command(
    "storage-proxy", add_arguments=add_arguments, run=run,
    help="serve a database storage as Optuna's gRPC storage proxy, for many workers (--storage grpc://HOST:PORT)",
    description="Serve STORAGE through Optuna's gRPC storage proxy, so that many workers (on many machines) share "
                "this process's database connections: start this once, then run each worker with --storage "
                "grpc://HOST:PORT.")
