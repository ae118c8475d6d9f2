"""Running a search in this process: open or resume the study, train trials
until the count or the time is up, print one line per trial, stop cleanly
on Ctrl-C or SIGTERM. What happens after each completed trial beyond that
(the dashboard note) is the caller's callback (``SearchRun.after_trial``)."""
from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from ..device import configure_threads, resolve_runtime
from ..kernels.plan import check_plan
from ..provenance import versions
from ..storage.artifacts import artifact_dir, check_artifact_dir
from ..storage.backends import is_journal, mask_url, storage_for_search
from ..storage.liveness import HEARTBEAT_INTERVAL, reap_dead_trials
from ..training.evaluate import TrainingData, check_same_data
from .objective import (
    STOP,
    Objective,
    TrialFailed,
    create_or_resume,
    enqueue_baseline,
    load_search_data,
)
from .progress import progress_for_terminal
from .results import (
    SPACE_ATTR,
    front_summary,
    pareto_front,
    study_seed_std,
    trials_so_far,
)
from .space import SearchSpace

# --------------------------------------------------------------------------- running


@dataclass
class SearchRun:
    space: SearchSpace
    study_name: str
    storage: str | None = None
    trials: int | None = 100
    timeout: float | None = 1800.0
    seed: int = 0
    data: str | None = None
    device: str | None = None
    precision: str = "auto"
    command: str = ""
    #: processes sharing this machine (each gets cores / workers threads)
    workers: int = 1
    #: this process's index among them: offsets the sampler's seed so the
    #: workers do not propose the same architectures
    worker_index: int = 0
    #: seconds between heartbeats on RDB storages (None: off)
    heartbeat: int | None = HEARTBEAT_INTERVAL
    #: optuna-dashboard artifact folder (None: beside the storage, see nas.storage.artifacts.artifact_dir)
    artifact_dir: str | None = None
    #: resume or join a study whose numerics plan was measured on another kind of machine (nas.kernels.plan)
    mix_numerics: bool = False
    #: what to do after each completed trial, called as ``action(study, storage_url)`` (the CLI passes the
    #: dashboard note's refresh, :func:`nas.report.note.refresh_note`): the search knows nothing of the
    #: report side, as Optuna's ``study.optimize(callbacks=...)`` knows nothing of its callers
    after_trial: tuple[Callable[[optuna.Study, str], object], ...] = ()


def open_search(run: SearchRun, data: TrainingData) -> tuple[optuna.Study, str]:
    """Resolve the storage, create or resume the study and record its
    provenance. Returns the study and the storage URL actually used."""

    url = storage_for_search(run.storage, run.study_name, run.workers)
    # a bad --artifact-dir is one line before the study is touched, not a failure after each training
    check_artifact_dir(artifact_dir(url, run.artifact_dir))
    heartbeat = None if is_journal(url) else run.heartbeat
    study = create_or_resume(run.space, run.study_name, url, run.seed + 1000 * run.worker_index, heartbeat,
                             data.fingerprint)
    check_plan(run.study_name, study.user_attrs, run.mix_numerics)
    if not study.user_attrs:
        study.set_user_attr(SPACE_ATTR, run.space.source)
        study.set_user_attr("space_name", run.space.name)
        study.set_user_attr("versions", versions())
        study.set_user_attr("data_fingerprint", data.fingerprint)
        study.set_user_attr("fidelity", run.space.fidelity.as_dict())
        study.set_user_attr("created", time.strftime("%Y-%m-%d %H:%M:%S"))
    else:  # again: another worker may have created it meanwhile
        check_same_data(run.study_name, study.user_attrs, data.fingerprint)
    if run.worker_index == 0:
        enqueue_baseline(study, run.space)
    if run.command and run.worker_index == 0:
        commands = list(study.user_attrs.get("commands", []))
        study.set_user_attr("commands", commands + [mask_url(run.command)])
    return study, url


def run_search(run: SearchRun, out: Callable[[str], None] = print) -> optuna.Study:
    """Create or resume the study and run trials until ``trials`` more have
    finished or ``timeout`` seconds have passed."""
    # our own one-line-per-trial output says what happened (failures with
    # their reason, in the trial's user attrs too); Optuna's warnings would
    # add a traceback per failed trial
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    runtime = resolve_runtime(run.device, run.precision)
    threads = configure_threads(run.workers)
    # everything that can be wrong with the input is checked before the
    # storage is touched, so a bad call writes nothing
    data = load_search_data(run.space, run.data)
    study, url = open_search(run, data)
    reap_dead_trials(study, out)  # trials left RUNNING by a worker that died

    f = run.space.fidelity
    out(f"study {run.study_name!r} in {mask_url(url)}: {trials_so_far(study)}; "
        f"space {run.space.name} ({run.space.sampler}), {len(data.train_labels)} train / {len(data.val_labels)} "
        f"val images, rungs {', '.join(f'{r:g}' for r in f.rungs)} epochs, eta {f.eta}; "
        f"{runtime.device} {runtime.precision}, {threads} threads")
    batch = min(f.batch_size, len(data.train_labels))
    # Optuna's heartbeat where the storage has it (RDB); else the trial's own beat
    beat = None if is_heartbeat_enabled(study._storage) else run.heartbeat
    objective = Objective(run.space, data, runtime, progress=progress_for_terminal(f.rungs, batch), beat_seconds=beat,
                          artifacts=artifact_dir(url, run.artifact_dir), storage_url=url, mix_numerics=run.mix_numerics)
    started = time.perf_counter()
    target = run.trials
    finished = [0]

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished[0] += 1
        elapsed = time.perf_counter() - started
        eta = _eta(elapsed, finished[0], target, run.timeout)
        out(f"trial {trial.number:>4} {_summary(trial)}  [{finished[0]}{'/' + str(target) if target else ''}, "
            f"{_minutes(elapsed)} elapsed{', ETA ' + _minutes(eta) if eta is not None else ''}]")
        reap_dead_trials(study, out)  # another worker may have died meanwhile
        if trial.state == TrialState.COMPLETE:
            # the dashboard shows study user attrs: the front as it stands, with its noise
            study.set_user_attr("front", front_summary(pareto_front(study), study_seed_std(study)))
            for action in run.after_trial:  # the study's note, where the caller asked for it
                action(study, url)

    with _signals_stop(study):
        study.optimize(objective, n_trials=run.trials, timeout=run.timeout, callbacks=[report],
                       catch=(TrialFailed,), gc_after_trial=False)
        if STOP.signum is not None:  # stopped between trials: tell the caller how it ended
            raise STOP.interrupt()
    return study


@contextlib.contextmanager
def _signals_stop(study: optuna.Study):
    """Ctrl-C and SIGTERM end the run cleanly (see :class:`_StopRequest`):
    the running trial fails with the reason, finished trials stay, the
    caller prints how to resume."""
    STOP.__init__()
    STOP.study = study
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, STOP.handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        STOP.study = None


def _eta(elapsed: float, done: int, target: int | None, timeout: float | None) -> float | None:
    left = []
    if target:
        left.append(elapsed / done * (target - done))
    if timeout:
        left.append(max(0.0, timeout - elapsed))
    return min(left) if left else None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _summary(trial: optuna.trial.FrozenTrial) -> str:
    a = trial.user_attrs
    macs = f"MACs {a['macs'] / 1e6:6.2f}M" if "macs" in a else ""
    macs += f"  {a['latency_ms']:.1f} ms/step" if "latency_ms" in a else ""
    if trial.state == TrialState.COMPLETE and "not_trained" in a:
        return f"INFEASIBLE {macs}  {a['not_trained']}"
    if trial.state == TrialState.COMPLETE:
        dup = f"  (same as trial {a['duplicate_of']})" if "duplicate_of" in a else ""
        dup += f"  (retry of trial {a['retry_of']})" if "retry_of" in a else ""
        seeds = a.get("seed_accuracies") or []
        spread = f" ± {a['accuracy_std']:.4f} ({len(seeds)} seeds)" if len(seeds) > 1 else ""
        return f"COMPLETE   acc {trial.values[0]:.4f}{spread}  {macs}{dup}"
    if trial.state == TrialState.PRUNED:
        rungs = a.get("rungs") or [[0, math.nan]]
        return f"PRUNED     acc {rungs[-1][1]:.4f} at {rungs[-1][0]:g} ep  {macs}"
    return f"FAIL       {macs}  {a.get('fail_reason', 'interrupted')}"
