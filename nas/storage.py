"""Where studies live, and what happens to the trial of a worker that died.

Storages (``--storage``):

* ``sqlite:///studies/nas.db`` (the default): one process at a time;
* a journal file, ``*.journal`` or ``*.log`` (default for ``--workers N``:
  ``studies/nas.journal``): Optuna's JournalStorage, which Optuna recommends
  over SQLite when several processes on one machine write at once;
* ``postgresql+psycopg2://user:password@host/db`` (or another SQLAlchemy
  URL): many machines. Heartbeat on, so a trial whose worker stopped
  beating is failed and retried.

Dead workers: every trial records who runs it (host, pid and the process's
start time, so a reused pid is not mistaken for the same process). When a
worker starts and after each of its trials it looks at the RUNNING trials:
one whose process on this host is gone, or (RDB storages) whose heartbeat is
older than the grace period, is failed with the reason in its user attrs and
its parameters are queued to run again (at most :data:`MAX_RETRIES` times,
so an architecture that kills its worker every time does not loop forever).
"""
from __future__ import annotations

import os
import re
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from .errors import NasError, one_line

DEFAULT_STORAGE = "sqlite:///studies/nas.db"
DEFAULT_JOURNAL = "studies/nas.journal"
JOURNAL_SUFFIXES = (".journal", ".log")
#: seconds between heartbeats of a running trial (RDB storages)
HEARTBEAT_INTERVAL = 60
#: a trial whose last heartbeat is older than this is taken for dead
GRACE_PERIOD = 180
MAX_RETRIES = 2
#: trial user attr naming the process that runs the trial
WORKER_ATTR = "worker"


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``;
    a ``password=`` query parameter is masked too."""
    url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&\s]*", r"\1***", url)


def _passwords(url: str) -> list[str]:
    found = re.findall(r"://[^:/@]*:([^@]*)@", url) + re.findall(r"[?&]password=([^&\s]*)", url)
    return [p for p in found if p]


def _scrub(message: str, url: str) -> str:
    for secret in _passwords(url):
        message = message.replace(secret, "***")
    return message


def is_journal(url: str) -> bool:
    return "://" not in url and url.endswith(JOURNAL_SUFFIXES)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def describe(url: str | None) -> str:
    """The storage as it may be printed or stored (password masked)."""
    return mask_url(url or DEFAULT_STORAGE)


def open_storage(url: str | None, heartbeat: int | None = None,
                 grace_period: int | None = None) -> optuna.storages.BaseStorage:
    """The storage behind ``url`` (see the module docstring). ``heartbeat``:
    seconds between heartbeats on RDB storages (None: off)."""
    url = url or DEFAULT_STORAGE
    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        try:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            # the open()-based lock works on every local filesystem, where
            # the default symlink lock needs symlink support
            return optuna.storages.JournalStorage(JournalFileBackend(url, lock_obj=JournalFileOpenLock(url)))
        except Exception as exc:
            raise NasError(f"--storage: cannot open journal file {url!r}: {one_line(exc, 240)}") from None
    if "://" not in url:
        raise NasError(f"--storage: {url!r} is neither a database URL (sqlite:///PATH.db, "
                       f"postgresql+psycopg2://USER:PASSWORD@HOST/DB) nor a journal file (*.journal, *.log)")
    if is_sqlite(url):
        path = url[len("sqlite:///"):]
        if path not in ("", ":memory:"):
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise NasError(f"--storage: cannot create the folder of {path}: {one_line(exc, 240)}") from None
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": grace_period or max(GRACE_PERIOD, 3 * heartbeat),
                  "heartbeat_stale_trial_callback": _retry_stale}
    try:
        with warnings.catch_warnings():  # heartbeat is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:  # SQLAlchemy's and the drivers' errors are many; the user needs one line
        message = _scrub(one_line(exc, 240), url)
        raise NasError(f"--storage: cannot open {mask_url(url)!r}: {message}; allowed: sqlite:///PATH.db, "
                       f"postgresql+psycopg2://USER:PASSWORD@HOST/DB (any SQLAlchemy URL), or a *.journal file"
                       ) from None


def check_url(url: str | None, workers: int = 1) -> None:
    """Refuse a storage string that cannot work, without opening it (so
    before any data is loaded or anything is written)."""
    if url is None:
        return
    if workers > 1 and is_sqlite(url):
        raise NasError(f"--storage: SQLite is not safe for {workers} concurrent workers; use a journal file "
                       f"(e.g. --storage {DEFAULT_JOURNAL}) or postgresql+psycopg2://...")
    if is_journal(url):
        return
    if "://" not in url:
        raise NasError(f"--storage: {url!r} is neither a database URL (sqlite:///PATH.db, "
                       f"postgresql+psycopg2://USER:PASSWORD@HOST/DB) nor a journal file (*.journal, *.log)")
    from sqlalchemy.engine import make_url

    try:
        make_url(url).get_dialect()
    except Exception as exc:
        raise NasError(f"--storage: cannot open {mask_url(url)!r}: {_scrub(one_line(exc, 240), url)}; allowed: "
                       f"sqlite:///PATH.db, postgresql+psycopg2://USER:PASSWORD@HOST/DB (any SQLAlchemy URL), "
                       f"or a *.journal file") from None


def study_names(url: str | None) -> list[str]:
    return [s.study_name for s in optuna.study.get_all_study_summaries(open_storage(url))]


def _default_sqlite_exists() -> bool:
    return Path(DEFAULT_STORAGE[len("sqlite:///"):]).exists()


def _has_study(url: str, name: str) -> bool:
    return name in study_names(url)


def storage_for_search(url: str | None, study: str, workers: int) -> str:
    """The storage a search writes to. Without ``--storage``: the default
    SQLite file for one worker, the default journal file for several, and
    whichever of the two already holds ``study`` (so a study is resumed
    where it lives). SQLite is refused for several workers."""
    if url:
        check_url(url, workers)
        return url
    in_sqlite = _default_sqlite_exists() and _has_study(DEFAULT_STORAGE, study)
    in_journal = Path(DEFAULT_JOURNAL).exists() and _has_study(DEFAULT_JOURNAL, study)
    if in_journal:
        return DEFAULT_JOURNAL
    if in_sqlite:
        if workers > 1:
            raise NasError(f"study {study!r} is in {DEFAULT_STORAGE}, which is not safe for {workers} concurrent "
                           f"workers; resume it with --workers 1, or start a new study: --study NEW_NAME")
        return DEFAULT_STORAGE
    return DEFAULT_JOURNAL if workers > 1 else DEFAULT_STORAGE


def storage_for_reading(url: str | None, study: str) -> str:
    """Where ``report``/``export`` find ``study``: ``url``, or without it the
    default SQLite file, then the default journal file."""
    if url:
        return url
    if Path(DEFAULT_JOURNAL).exists() and not (_default_sqlite_exists() and _has_study(DEFAULT_STORAGE, study)) \
            and _has_study(DEFAULT_JOURNAL, study):
        return DEFAULT_JOURNAL
    return DEFAULT_STORAGE


def _missing_file(url: str) -> str | None:
    """The local file behind ``url`` if it does not exist (opening it would
    create an empty one)."""
    if is_journal(url):
        path = url
    elif url.startswith("sqlite:///") and url[len("sqlite:///"):] not in ("", ":memory:"):
        path = url[len("sqlite:///"):]
    else:
        return None
    return None if Path(path).exists() else path


def load_study(name: str, url: str | None) -> optuna.Study:
    """An existing study, or a one-line error listing the ones there are.
    Reading never creates a storage file."""
    url = storage_for_reading(url, name)
    missing = _missing_file(url)
    if missing:
        raise NasError(f"no study {name!r}: storage file {missing} does not exist (run a search first, "
                       f"or pass --storage)")
    store = open_storage(url)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(store)]
    if name not in names:
        others = ""
        if url == DEFAULT_STORAGE and Path(DEFAULT_JOURNAL).exists():
            others = f"; in {DEFAULT_JOURNAL}: {', '.join(study_names(DEFAULT_JOURNAL)) or '(none)'}"
        raise NasError(f"no study {name!r} in {mask_url(url)}; studies there: {', '.join(names) or '(none)'}"
                       + others)
    return optuna.load_study(study_name=name, storage=store)


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


def worker_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid(), "start": _process_start(os.getpid())}


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


def _retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's heartbeat callback, for stale trials Optuna finds itself
    (between our own checks): queue the parameters again."""
    _enqueue_retry(study, trial, "no heartbeat within the grace period (worker died or lost)")


def reap_dead_trials(study: optuna.Study, log: Callable[[str], None] | None = None) -> list[int]:
    """Fail the RUNNING trials whose worker is gone (see the module
    docstring) and queue their parameters again. Returns their numbers."""
    storage = study._storage
    stale_ids: set[int] = set()
    if is_heartbeat_enabled(storage):
        stale_ids = set(storage._get_stale_trial_ids(study._study_id))  # Optuna's own test, also used by optimize()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if _process_gone(worker):
            reason = f"worker process {worker['pid']} on {worker['host']} died during the trial (killed?)"
        elif trial._trial_id in stale_ids:
            who = f"{worker['pid']} on {worker['host']}" if isinstance(worker, dict) else "unknown"
            reason = f"no heartbeat from worker {who} within the grace period (worker died or lost)"
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
