"""Where studies live, and what happens to the trial of a worker that died.

Storages (``--storage``):

* ``sqlite:///studies/nas.db`` (the default): one process at a time;
* a journal file, ``*.journal`` or ``*.log`` (default for ``--workers N``:
  ``studies/nas.journal``): Optuna's JournalStorage, which Optuna recommends
  over SQLite when several processes on one machine write at once;
* ``postgresql+psycopg2://user:password@host/db`` (or another SQLAlchemy
  URL): many machines. Heartbeat on, so a trial whose worker stopped
  beating is failed and retried.
* ``grpc://HOST:PORT``: Optuna's gRPC storage proxy
  (:func:`optuna.storages.run_grpc_proxy_server`, started by
  ``search.py storage-proxy``) in front of one RDB storage, so hundreds of
  workers share the proxy's few database connections instead of opening one
  each. Optuna's heartbeat does not pass through the proxy; workers there
  beat through a trial user attr instead (:class:`TrialBeat`).

Dead workers: every trial records who runs it (host, pid and the process's
start time, so a reused pid is not mistaken for the same process). When a
worker starts and after each of its trials it looks at the RUNNING trials:
one whose process on this host is gone, or (RDB storages) whose heartbeat is
older than the grace period, or (storages without Optuna's heartbeat: journal
files, the gRPC proxy) whose own beat (user attr ``alive_at``) is that old,
is failed with the reason in its user attrs and
its parameters are queued to run again (at most :data:`MAX_RETRIES` times,
so an architecture that kills its worker every time does not loop forever).
"""
from __future__ import annotations

import re
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from ..errors import NasError, one_line
from .liveness import GRACE_PERIOD, retry_stale

DEFAULT_STORAGE = "sqlite:///studies/nas.db"
DEFAULT_JOURNAL = "studies/nas.journal"
JOURNAL_SUFFIXES = (".journal", ".log")
#: seconds to wait for a gRPC storage proxy to answer
PROXY_TIMEOUT = 10.0
_ALLOWED = ("allowed: sqlite:///PATH.db, postgresql+psycopg2://USER:PASSWORD@HOST/DB (any SQLAlchemy URL), "
            "grpc://HOST:PORT (a storage proxy) or a *.journal file")


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


def is_grpc(url: str) -> bool:
    return url.startswith("grpc://")


def grpc_address(url: str) -> tuple[str, int]:
    """``grpc://HOST:PORT`` -> (HOST, PORT), or a one-line error. An IPv6
    host keeps its brackets (``[::1]``): gRPC's target is ``HOST:PORT``."""
    m = re.fullmatch(r"grpc://(\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):(\d+)/?", url)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        raise NasError(f"--storage: {url!r} is not grpc://HOST:PORT (a port 1-65535), e.g. grpc://10.0.0.5:13000")
    return m.group(1), int(m.group(2))


def _bracketed(host: str) -> str:
    """``::1`` -> ``[::1]`` (an IPv6 literal in a ``HOST:PORT`` target)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def describe(url: str | None) -> str:
    """The storage as it may be printed or stored (password masked)."""
    return mask_url(url or DEFAULT_STORAGE)


def open_storage(url: str | None, heartbeat: int | None = None,
                 grace_period: int | None = None) -> optuna.storages.BaseStorage:
    """The storage behind ``url`` (see the module docstring). ``heartbeat``:
    seconds between heartbeats on RDB storages (None: off)."""
    url = url or DEFAULT_STORAGE
    if is_journal(url):

        try:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            # the open()-based lock works on every local filesystem, where
            # the default symlink lock needs symlink support
            return optuna.storages.JournalStorage(JournalFileBackend(url, lock_obj=JournalFileOpenLock(url)))
        except Exception as exc:
            raise NasError(f"--storage: cannot open journal file {url!r}: {one_line(exc, 240)}") from None
    if "://" not in url:
        raise NasError(f"--storage: {url!r} is neither a database URL (sqlite:///PATH.db, "
                       f"postgresql+psycopg2://USER:PASSWORD@HOST/DB, grpc://HOST:PORT) nor a journal file "
                       f"(*.journal, *.log)")
    if is_grpc(url):
        return _open_proxy(url)
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
                  "heartbeat_stale_trial_callback": retry_stale}
    try:
        with warnings.catch_warnings():  # heartbeat is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:  # SQLAlchemy's and the drivers' errors are many; the user needs one line
        message = _scrub(one_line(exc, 240), url)
        raise NasError(f"--storage: cannot open {mask_url(url)!r}: {message}; {_ALLOWED}") from None


def _open_proxy(url: str) -> optuna.storages.BaseStorage:
    """A client of the gRPC storage proxy at ``url``, once it answers."""
    host, port = grpc_address(url)
    with warnings.catch_warnings():  # "experimental" since Optuna 4.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)  # grpcio is a dependency
    try:
        proxy.wait_server_ready(timeout=PROXY_TIMEOUT)
    except ConnectionError:
        proxy.close()
        raise NasError(f"--storage: no storage proxy answers at {url} within {PROXY_TIMEOUT:g} s; start one there "
                       f"with: python search.py storage-proxy --storage DATABASE_URL --host HOST --port {port}"
                       ) from None
    return proxy


def serve_proxy(url: str | None, host: str, port: int, out: Callable[[str], None] = print) -> None:
    """Serve the storage behind ``url`` as Optuna's gRPC storage proxy on
    ``host:port`` until Ctrl-C or SIGTERM; workers then use
    ``--storage grpc://HOST:PORT``."""
    url = url or DEFAULT_STORAGE
    if is_journal(url) or is_grpc(url):
        raise NasError(f"storage-proxy --storage: {mask_url(url)!r} cannot be served: Optuna's gRPC proxy serves "
                       f"database storages only (sqlite:///PATH.db, postgresql+psycopg2://USER:PASSWORD@HOST/DB)")
    if not 1 <= port <= 65535:
        raise NasError(f"--port: must be 1-65535, got {port}")
    check_url(url)
    host = _bracketed(host)
    _check_port_free(host, port)
    # cached in this process, as Optuna advises for the proxy: the workers'
    # reads of finished trials never reach the database again
    storage = optuna.storages.get_storage(open_storage(url))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        reach = "THIS_MACHINE" if host in ("0.0.0.0", "[::]") else host  # every interface: workers name this one
        out(f"storage proxy for {mask_url(url)} on grpc://{host}:{port}; workers: --storage grpc://{reach}:{port} "
            f"(Ctrl-C stops it)")
        try:
            optuna.storages.run_grpc_proxy_server(storage, host=host, port=port)
        except RuntimeError as exc:  # grpc: "Failed to bind to address"
            raise NasError(f"storage-proxy: cannot listen on {host}:{port}: {one_line(exc, 200)}") from None


def _check_port_free(host: str, port: int) -> None:
    """gRPC binds with SO_REUSEPORT, so a second proxy on a busy port would
    silently share it with the first (each worker then talking to either
    database); a plain bind tells that the port is taken."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # a stopped proxy's connections linger in TIME_WAIT: they must not
        # keep a new proxy off its port (a live listener still refuses the bind)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bare, port))
        except OSError as exc:
            raise NasError(f"storage-proxy: cannot listen on {host}:{port}: {exc.strerror or exc} "
                           f"(another proxy or program has it? choose --port)") from None


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
                       f"postgresql+psycopg2://USER:PASSWORD@HOST/DB, grpc://HOST:PORT) nor a journal file "
                       f"(*.journal, *.log)")
    if is_grpc(url):
        grpc_address(url)
        return
    from sqlalchemy.engine import (
        make_url,  # lazy: SQLAlchemy only to check a database URL
    )

    try:
        make_url(url).get_dialect()
    except Exception as exc:
        raise NasError(f"--storage: cannot open {mask_url(url)!r}: {_scrub(one_line(exc, 240), url)}; {_ALLOWED}"
                       ) from None


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
