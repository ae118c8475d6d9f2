"""``--workers N``: N worker processes on this machine, one study.

The parent checks the input, opens the storage and creates (or resumes) the
study once, so N processes never race to create it and a bad call fails
before anything starts. Then it starts N copies of the search command, each
with ``cores / N`` threads, its share of ``--trials`` and its own sampler
seed, and prints their lines prefixed with the worker's number. Processes
rather than threads: each trial is a PyTorch training loop, and two of those
in one interpreter would share one set of thread pools.

Ctrl-C reaches every worker (they share the terminal's process group);
SIGTERM to the parent is passed on. Each worker then fails its running trial
and exits; finished trials stay in the storage.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

import optuna

from .errors import NasError
from .search import SearchRun, Terminated, load_search_data, open_search
from .storage import open_storage, reap_dead_trials


def split_trials(total: int | None, workers: int) -> list[int | None]:
    """``total`` trials over ``workers`` as evenly as possible (None: no limit)."""
    if total is None:
        return [None] * workers
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


def _worker_argv(run: SearchRun, args: argparse.Namespace, url: str, index: int, trials: int | None) -> list[str]:
    argv = [sys.executable, "-m", "nas.cli", "search", "--space", args.space, "--study", run.study_name,
            "--storage", url, "--seed", str(run.seed), "--workers", str(run.workers),
            "--worker-index", str(index), "--timeout", str(run.timeout or 0),
            "--heartbeat", str(run.heartbeat or 60), "--precision", run.precision]
    if trials is not None:
        argv += ["--trials", str(trials)]
    for flag, value in (("--epochs", args.epochs), ("--subset", args.subset), ("--val-size", args.val_size),
                        ("--data", args.data), ("--device", args.device)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run_workers(run: SearchRun, args: argparse.Namespace, out: Callable[[str], None] = print) -> optuna.Study:
    data = load_search_data(run.space, run.data)  # a missing data folder fails here, once
    study, url = open_search(run, data)
    reap_dead_trials(study, out)
    out(f"study {run.study_name!r}: {len(study.trials)} trials so far; starting {run.workers} workers on "
        f"{url} ({', '.join(str(t) for t in split_trials(run.trials, run.workers))} trials)")
    del data

    shares = split_trials(run.trials, run.workers)
    procs: list[subprocess.Popen] = []
    lock = threading.Lock()

    def pump(index: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with lock:
                out(f"[w{index}] {line.rstrip()}")

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    threads = []
    for index, share in enumerate(shares, start=1):
        if share == 0:
            continue
        proc = subprocess.Popen(_worker_argv(run, args, url, index, share), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        procs.append(proc)
        t = threading.Thread(target=pump, args=(index, proc), daemon=True)
        t.start()
        threads.append(t)

    def forward_term(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, forward_term)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:  # they got the signal too; give them time to fail their trial and exit
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        for t in threads:
            t.join(timeout=5)
    bad = [(i, c) for i, c in enumerate(codes, start=1) if c != 0]
    if bad:
        raise NasError("worker " + ", ".join(f"w{i} exited with code {c}" for i, c in bad)
                       + "; the lines above say why; finished trials are kept")
    return optuna.load_study(study_name=run.study_name, storage=open_storage(url))
