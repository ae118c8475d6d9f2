"""Who runs a trial and whether it still does: a worker's identity, the trial's
own heartbeat where the storage has none, and reaping trials whose worker
died, retried up to ``MAX_RETRIES`` times (docs/design.md section 7)."""
from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from ..errors import one_line

#: seconds between heartbeats of a running trial (RDB storages)
HEARTBEAT_INTERVAL = 60
#: a trial whose last heartbeat is older than this is taken for dead
GRACE_PERIOD = 180
MAX_RETRIES = 2
#: trial user attr naming the process that runs the trial
WORKER_ATTR = "worker"
#: trial user attr: when the worker last said it is alive (storages without Optuna's heartbeat)
ALIVE_ATTR = "alive_at"


# --------------------------------------------------------------------------- who runs a trial


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which
    tells a live process from a new one that reuses a dead one's pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _boot_id() -> str | None:
    """Changes at every boot, and differs between machines that share a host
    name (containers): pids are only compared within one boot of one kernel."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def worker_identity(beat: float | None = None) -> dict[str, Any]:
    """Who runs a trial; ``beat``: seconds between its :class:`TrialBeat`
    (None: the storage has Optuna's heartbeat, or nothing beats)."""
    who = {"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid(), "start": _process_start(os.getpid())}
    return who if beat is None else {**who, "beat": beat}


def beat_grace(beat: float) -> float:
    """Silence after which a beating trial is taken for dead: as Optuna's
    heartbeat, three beats and at least :data:`GRACE_PERIOD`."""
    return max(GRACE_PERIOD, 3 * beat)


class TrialBeat:
    """Optuna's heartbeat for storages that lack it (journal files, the gRPC
    proxy): while the trial runs, a daemon thread writes the time into the
    trial's user attr ``alive_at`` every ``seconds``, so a worker on another
    machine, whose process cannot be looked up, is still found dead when it
    stops (:func:`reap_dead_trials`). The times are wall-clock seconds of
    the worker's machine: clocks that differ by much less than the grace
    period (NTP) are assumed."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, seconds: float) -> None:
        self._storage, self._trial_id, self._seconds = storage, trial_id, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"trial-beat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        self._storage.set_trial_user_attr(self._trial_id, ALIVE_ATTR, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self._seconds):
            try:
                self._beat()
            except optuna.exceptions.UpdateFinishedTrialError:
                return  # the trial ended (or another worker failed it) between two beats
            except Exception as exc:  # a storage hiccup: the next beat may get through, and the grace has room
                warnings.warn(f"trial beat not recorded: {one_line(exc, 200)}", RuntimeWarning, stacklevel=1)

    def __enter__(self) -> TrialBeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=self._seconds + 5)


def _is_zombie(pid: int) -> bool:
    """Exited but not yet waited for by its parent: dead for our purposes."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _process_gone(worker: dict[str, Any]) -> bool:
    """True if ``worker`` ran on this machine (same host name and boot) and
    its process no longer exists."""
    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname() \
            or worker.get("boot") != _boot_id():
        return False  # another machine's (or container's) process: its heartbeat decides
    pid = worker.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by someone else
    if _is_zombie(pid):
        return True
    start = _process_start(pid)
    return start is not None and worker.get("start") is not None and start != worker["start"]


def _original(trial: FrozenTrial) -> tuple[int, int]:
    """(number of the first trial of this retry chain, retries so far)."""
    return int(trial.user_attrs.get("retry_of", trial.number)), int(trial.user_attrs.get("retry", 0))


def _enqueue_retry(study: optuna.Study, trial: FrozenTrial, reason: str) -> int | None:
    original, retries = _original(trial)
    if retries >= MAX_RETRIES or not trial.params:
        return None
    marks = {"baseline": True} if trial.user_attrs.get("baseline") else {}  # a retried baseline stays the baseline
    study.enqueue_trial(trial.params, user_attrs={"retry_of": original, "retry": retries + 1,
                                                  "retry_reason": f"trial {trial.number}: {reason}", **marks},
                        skip_if_exists=False)
    return original


def retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's heartbeat callback, for stale trials Optuna finds itself
    (between our own checks): queue the parameters again."""
    _enqueue_retry(study, trial, "no heartbeat within the grace period (worker died or lost)")


def _beat_stale(trial: FrozenTrial, worker: Any, now: float) -> bool:
    """The trial beats (:class:`TrialBeat`) and its last beat is older than the grace."""
    alive = trial.user_attrs.get(ALIVE_ATTR)
    if not isinstance(worker, dict) or not isinstance(worker.get("beat"), (int, float)) \
            or not isinstance(alive, (int, float)):
        return False
    return now - alive > beat_grace(float(worker["beat"]))


def reap_dead_trials(study: optuna.Study, log: Callable[[str], None] | None = None) -> list[int]:
    """Fail the RUNNING trials whose worker is gone (see the module
    docstring) and queue their parameters again. Returns their numbers."""
    storage = study._storage
    stale_ids: set[int] = set()
    if is_heartbeat_enabled(storage):
        stale_ids = set(storage._get_stale_trial_ids(study._study_id))  # Optuna's own test, also used by optimize()
    reaped = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        who = f"{worker['pid']} on {worker['host']}" if isinstance(worker, dict) else "unknown"
        if _process_gone(worker):
            reason = f"worker process {worker['pid']} on {worker['host']} died during the trial (killed?)"
        elif trial._trial_id in stale_ids:
            reason = f"no heartbeat from worker {who} within the grace period (worker died or lost)"
        elif _beat_stale(trial, worker, now):
            reason = (f"no beat from worker {who} for {now - float(trial.user_attrs[ALIVE_ATTR]):.0f} s "
                      f"(grace {beat_grace(float(worker['beat'])):.0f} s; worker died or lost)")
        else:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        retried = _enqueue_retry(study, trial, reason)
        reaped.append(trial.number)
        if log:
            log(f"trial {trial.number:>4} FAIL       {reason}; "
                + ("its parameters are queued again" if retried is not None else
                   f"not retried (already retried {MAX_RETRIES} times)"))
    return reaped
