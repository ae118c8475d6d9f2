"""``--workers N``: N worker processes on this machine, one study.

The parent checks the input, opens the storage and creates (or resumes) the
study once, so N processes never race to create it and a bad call fails
before anything starts. Then it starts N copies of the search command, each
with ``cores / N`` threads, its share of ``--trials`` and its own sampler
seed, and prints their lines prefixed with the worker's number. Processes
rather than threads: each trial is a PyTorch training loop, and two of those
in one interpreter would share one set of thread pools.

Ctrl-C and SIGTERM to the parent are passed on to every worker, once (the
workers run in sessions of their own). Each worker then fails its running
trial and exits; finished trials stay in the storage. A worker that dies
outright leaves its trial RUNNING; the parent fails and requeues it as soon
as it sees the worker gone, so the others retry it.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from ..errors import NasError
from ..storage.backends import mask_url, open_storage
from ..storage.liveness import reap_dead_trials
from .objective import Terminated, load_search_data
from .results import trials_so_far
from .run import SearchRun, open_search


def split_trials(total: int | None, workers: int) -> list[int | None]:
    """``total`` trials over ``workers`` as evenly as possible (None: no limit)."""
    if total is None:
        return [None] * workers
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


def _worker_argv(run: SearchRun, args: argparse.Namespace, index: int, trials: int | None) -> list[str]:
    # the storage URL goes by environment (NAS_STORAGE), not argv, which
    # every local user can read with ps
    argv = [sys.executable, "-m", "nas.cli", "search", "--space", args.space, "--study", run.study_name,
            "--seed", str(run.seed), "--workers", str(run.workers),
            "--worker-index", str(index), "--timeout", str(run.timeout or 0),
            "--heartbeat", str(run.heartbeat or 60), "--precision", run.precision]
    if trials is not None:
        argv += ["--trials", str(trials)]
    if run.mix_numerics:
        argv += ["--mix-numerics"]
    for flag, value in (("--epochs", args.epochs), ("--subset", args.subset), ("--val-size", args.val_size),
                        ("--data", args.data), ("--device", args.device), ("--artifact-dir", args.artifact_dir)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run_workers(run: SearchRun, args: argparse.Namespace, out: Callable[[str], None] = print) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = load_search_data(run.space, run.data)  # a missing data folder fails here, once
    study, url = open_search(run, data)
    del data
    reap_dead_trials(study, out)
    shares = split_trials(run.trials, run.workers)
    out(f"study {run.study_name!r}: {trials_so_far(study)}; starting {run.workers} workers on "
        f"{mask_url(url)} ({', '.join(str(t) for t in shares)} trials)")

    procs: dict[int, subprocess.Popen] = {}
    lock = threading.Lock()
    received: list[int] = []

    def forward(signum, frame) -> None:
        # the workers run in their own sessions (a terminal's Ctrl-C reaches
        # only this process), so each gets the signal exactly once, from here
        if received:
            return
        received.append(signum)
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signum)

    def pump(index: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with lock:
                out(f"[w{index}] {line.rstrip()}")

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    # the workers import this very package, installed or not
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONUNBUFFERED="1", NAS_STORAGE=url, PYTHONPATH=python_path)
    threads = []
    try:
        for index, share in enumerate(shares, start=1):
            if share == 0 or received:
                continue
            proc = subprocess.Popen(_worker_argv(run, args, index, share), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
            procs[index] = proc
            t = threading.Thread(target=pump, args=(index, proc), daemon=True)
            t.start()
            threads.append(t)
        codes: dict[int, int] = {}
        while len(codes) < len(procs):
            for index, proc in procs.items():
                if index not in codes and proc.poll() is not None:
                    codes[index] = proc.returncode
                    # a worker that died leaves its trial RUNNING: fail and requeue it now,
                    # so the workers still running pick the retry up
                    reap_dead_trials(study, out)
            time.sleep(0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for t in threads:
            t.join(timeout=5)
    if received:
        raise Terminated() if received[0] == signal.SIGTERM else KeyboardInterrupt()
    bad = [(i, c) for i, c in sorted(codes.items()) if c != 0]
    if bad:
        raise NasError(", ".join(f"worker w{i} " + (f"was killed by signal {-c}" if c < 0 else f"exited with code {c}")
                                 for i, c in bad)
                       + "; finished trials are kept, and a trial a killed worker left running is failed and "
                         "retried by the next run")
    study = optuna.load_study(study_name=run.study_name, storage=open_storage(url))

    for action in run.after_trial:  # the workers did it in turn; once more, from the final state
        action(study, url)
    return study
