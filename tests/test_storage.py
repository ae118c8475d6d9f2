"""Storage choice and dead-worker recovery (nas/storage.py), without training."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import free_port
from optuna.trial import TrialState

from nas.errors import NasError
from nas.storage import backends as st
from nas.storage import liveness

optuna.logging.set_verbosity(optuna.logging.ERROR)
REPO = Path(__file__).resolve().parents[1]


def test_mask_url_hides_passwords():
    assert st.mask_url("postgresql+psycopg2://nas:s3cr3t@db.example:5432/nas") == \
        "postgresql+psycopg2://nas:***@db.example:5432/nas"
    assert st.mask_url("sqlite:///studies/nas.db") == "sqlite:///studies/nas.db"
    assert st.mask_url("studies/nas.journal") == "studies/nas.journal"
    assert st.mask_url("postgresql://:s3cr3t@h/db") == "postgresql://:***@h/db"
    assert st.mask_url("postgresql+psycopg2://u@h/db?sslmode=require&password=s3cr3t") == \
        "postgresql+psycopg2://u@h/db?sslmode=require&password=***"


def test_open_storage_kinds(tmp_path):
    journal = st.open_storage(str(tmp_path / "a.journal"))
    assert isinstance(journal, optuna.storages.JournalStorage)
    rdb = st.open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(rdb, optuna.storages.RDBStorage)
    with pytest.raises(NasError, match="neither a database URL .* nor a journal file"):
        st.open_storage(str(tmp_path / "a.db"))  # a path without a scheme is not guessed at
    with pytest.raises(NasError, match=r"--storage: cannot open 'nosuchdb://u:\*\*\*@h/d'") as info:
        st.open_storage("nosuchdb://u:hunter2@h/d")
    assert "hunter2" not in str(info.value)


def test_storage_for_search_and_reading(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert st.storage_for_search(None, "s", 1) == st.DEFAULT_STORAGE
    assert st.storage_for_search(None, "s", 4) == st.DEFAULT_JOURNAL
    with pytest.raises(NasError, match="SQLite is not safe for 4 concurrent workers"):
        st.storage_for_search("sqlite:///x.db", "s", 4)
    assert st.storage_for_search("x.journal", "s", 4) == "x.journal"
    # a study made by a parallel run lives in the journal: a later plain run and report find it there
    optuna.create_study(study_name="par", storage=st.open_storage(st.DEFAULT_JOURNAL))
    assert st.storage_for_search(None, "par", 1) == st.DEFAULT_JOURNAL
    assert st.storage_for_reading(None, "par") == st.DEFAULT_JOURNAL
    assert st.load_study("par", None).study_name == "par"
    # a study in SQLite is not continued by several writers
    optuna.create_study(study_name="one", storage=st.open_storage(st.DEFAULT_STORAGE))
    assert st.storage_for_search(None, "one", 1) == st.DEFAULT_STORAGE
    with pytest.raises(NasError, match="not safe for 2 concurrent workers; resume it with --workers 1"):
        st.storage_for_search(None, "one", 2)
    with pytest.raises(NasError, match=r"no study 'nope' in sqlite:///studies/nas.db; studies there: one; "
                                       r"in studies/nas.journal: par"):
        st.load_study("nope", None)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


X = ["a", "b", "alive", "orphan", "boom", "remote", "v"]


def _running_trial(study: optuna.Study, worker: dict, **params) -> optuna.Trial:
    study.enqueue_trial(params)
    trial = study.ask()
    for name, value in params.items():
        assert trial.suggest_categorical(name, X) == value
    trial.set_user_attr(liveness.WORKER_ATTR, worker)
    return trial


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_reap_fails_dead_workers_trial_and_queues_its_params(tmp_path, kind):
    url = str(tmp_path / "s.journal") if kind == "journal" else f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=st.open_storage(url))
    done = study.ask()
    done.suggest_categorical("x", X)
    study.tell(done, 1.0)
    me = liveness.worker_identity()
    dead = dict(me, pid=_dead_pid())
    alive = _running_trial(study, me, x="alive")
    orphan = _running_trial(study, dead, x="orphan")
    lines: list[str] = []
    assert liveness.reap_dead_trials(study, lines.append) == [orphan.number]
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[done.number].state == TrialState.COMPLETE  # finished work untouched
    assert by_number[alive.number].state == TrialState.RUNNING  # a live process keeps its trial
    failed = by_number[orphan.number]
    assert failed.state == TrialState.FAIL
    assert f"worker process {dead['pid']} on {dead['host']} died" in failed.user_attrs["fail_reason"]
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == orphan.number
    assert "queued again" in lines[0]
    # the retry runs with the dead trial's parameters
    retry = study.ask()
    assert retry.suggest_categorical("x", X) == "orphan"
    assert liveness.reap_dead_trials(study) == []  # nothing more to do


def test_reused_pid_is_not_the_same_process(tmp_path):
    study = optuna.create_study(storage=st.open_storage(str(tmp_path / "s.journal")))
    impostor = dict(liveness.worker_identity(), start="1")  # our pid, but another start time
    trial = _running_trial(study, impostor, x="v")
    assert liveness.reap_dead_trials(study) == [trial.number]


def test_retries_are_bounded(tmp_path):
    study = optuna.create_study(storage=st.open_storage(str(tmp_path / "s.journal")))
    dead = dict(liveness.worker_identity(), pid=_dead_pid())
    first = _running_trial(study, dead, x="boom")
    for attempt in range(liveness.MAX_RETRIES + 1):
        liveness.reap_dead_trials(study)
        waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
        if attempt < liveness.MAX_RETRIES:
            assert len(waiting) == 1 and waiting[0].user_attrs["retry"] == attempt + 1
            assert waiting[0].user_attrs["retry_of"] == first.number
            nxt = study.ask()
            assert nxt.suggest_categorical("x", X) == "boom"
            nxt.set_user_attr(liveness.WORKER_ATTR, dead)
        else:
            assert waiting == []  # given up after MAX_RETRIES
    assert sum(t.state == TrialState.FAIL for t in study.get_trials()) == liveness.MAX_RETRIES + 1


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() without optimize(): fine for this test
def test_heartbeat_stale_trial_is_failed_with_reason(tmp_path):
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    study = optuna.create_study(study_name="hb", storage=st.open_storage(url, heartbeat=1, grace_period=1))
    other_host = {"host": "elsewhere.invalid", "pid": 1, "start": "1"}
    trial = _running_trial(study, other_host, x="remote")
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)
    assert liveness.reap_dead_trials(study) == [trial.number]
    failed = study.get_trials()[trial.number]
    assert failed.state == TrialState.FAIL
    assert "no heartbeat from worker 1 on elsewhere.invalid" in failed.user_attrs["fail_reason"]
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"x": "remote"}]


# --- storages without Optuna's heartbeat: the trial's own beat ------------------------------------


def test_a_remote_trial_whose_beat_stopped_is_failed_and_retried(tmp_path):
    """A worker on another machine (its pid cannot be looked up) that stopped
    beating for longer than the grace is dead; one that beats recently, or a
    trial that never beat (an older study), is left alone."""
    study = optuna.create_study(storage=st.open_storage(str(tmp_path / "s.journal")))
    remote = {"host": "elsewhere.invalid", "boot": "b", "pid": 1, "start": "1", "beat": 60}
    now = time.time()
    silent = _running_trial(study, remote, x="remote")
    silent.set_user_attr(liveness.ALIVE_ATTR, now - liveness.beat_grace(60) - 5)
    beating = _running_trial(study, remote, x="alive")
    beating.set_user_attr(liveness.ALIVE_ATTR, now - liveness.beat_grace(60) + 30)
    never = _running_trial(study, {k: v for k, v in remote.items() if k != "beat"}, x="v")
    never.set_user_attr(liveness.ALIVE_ATTR, now - 10_000)  # no "beat" in its worker: it never promised to beat
    lines: list[str] = []
    assert liveness.reap_dead_trials(study, lines.append) == [silent.number]
    failed = study.get_trials()[silent.number]
    assert failed.state == TrialState.FAIL
    assert re.search(r"no beat from worker 1 on elsewhere.invalid for 18\d s \(grace 180 s", failed.user_attrs["fail_reason"])
    assert study.get_trials()[beating.number].state == TrialState.RUNNING
    assert study.get_trials()[never.number].state == TrialState.RUNNING
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"x": "remote"}]
    assert liveness.beat_grace(100) == 300  # three beats, never under the grace period


def test_trial_beat_writes_while_the_trial_runs_and_stops_after(tmp_path):
    study = optuna.create_study(storage=st.open_storage(str(tmp_path / "s.journal")))
    trial = study.ask()
    with liveness.TrialBeat(study._storage, trial._trial_id, 0.05):
        first = study.get_trials()[0].user_attrs[liveness.ALIVE_ATTR]  # written on entry
        time.sleep(0.5)
        later = study.get_trials()[0].user_attrs[liveness.ALIVE_ATTR]
        assert later > first + 0.2
    # no beat once the block is left, checked while the trial still runs (after tell, Optuna itself would
    # refuse a beat, so a check there could not fail)
    stopped = study.get_trials()[0].user_attrs[liveness.ALIVE_ATTR]
    time.sleep(0.3)
    assert study.get_trials()[0].user_attrs[liveness.ALIVE_ATTR] == stopped
    assert study.get_trials()[0].state == TrialState.RUNNING
    study.tell(trial, 1.0)
    assert liveness.worker_identity(60)["beat"] == 60 and "beat" not in liveness.worker_identity()


# --- grpc://HOST:PORT: Optuna's gRPC storage proxy -------------------------------------------------


@pytest.mark.parametrize("url", ["grpc://db", "grpc://db:0", "grpc://db:70000", "grpc://:13000", "grpc://db:13000/x"])
def test_grpc_url_must_be_host_and_port(url):
    with pytest.raises(NasError, match=r"is not grpc://HOST:PORT"):
        st.check_url(url)
    assert st.grpc_address("grpc://10.0.0.5:13000") == ("10.0.0.5", 13000)
    assert st.grpc_address("grpc://[::1]:13000") == ("[::1]", 13000)  # gRPC's target needs the brackets
    st.check_url("grpc://db.example:13000", workers=8)  # many workers: what the proxy is for


def test_grpc_storage_without_a_proxy_is_one_line(monkeypatch):
    monkeypatch.setattr(st, "PROXY_TIMEOUT", 0.5)
    port = free_port()
    with pytest.raises(NasError, match=rf"no storage proxy answers at grpc://127.0.0.1:{port} within 0.5 s; "
                                       rf"start one there with: python search.py storage-proxy"):
        st.open_storage(f"grpc://127.0.0.1:{port}")


def test_storage_proxy_refuses_what_it_cannot_serve(tmp_path):
    with pytest.raises(NasError, match=r"cannot be served: Optuna's gRPC proxy serves database storages only"):
        st.serve_proxy(str(tmp_path / "a.journal"), "127.0.0.1", 13000)
    with pytest.raises(NasError, match=r"cannot be served"):
        st.serve_proxy("grpc://127.0.0.1:13001", "127.0.0.1", 13000)
    assert not (tmp_path / "a.journal").exists()


def test_storage_proxy_command_serves_the_database_and_stops_on_sigterm(tmp_path):
    """``search.py storage-proxy`` in front of a SQLite file, on IPv6 loopback
    (brackets in the URL): a study created and a trial told through grpc://
    land in the file; a remote worker's trial whose beat stopped is reaped
    through the proxy; SIGTERM stops it cleanly; a second proxy on the same
    port is one line, exit 2."""
    db = tmp_path / "p.db"
    port = free_port("::1")
    proc = subprocess.Popen([sys.executable, str(REPO / "search.py"), "storage-proxy", "--storage",
                             f"sqlite:///{db}", "--host", "::1", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        url = f"grpc://[::1]:{port}"
        proxy = st.open_storage(url)  # waits until it answers
        study = optuna.create_study(study_name="via-proxy", storage=proxy, directions=["maximize", "minimize"])
        trial = study.ask()
        trial.set_user_attr("who", "worker")
        study.tell(trial, [0.5, 1e6])
        lost = _running_trial(study, {"host": "elsewhere.invalid", "boot": "b", "pid": 1, "start": "1", "beat": 60},
                              x="remote")
        lost.set_user_attr(liveness.ALIVE_ATTR, time.time() - 1000)
        assert liveness.reap_dead_trials(study) == [lost.number]
        again = subprocess.run([sys.executable, str(REPO / "search.py"), "storage-proxy", "--storage",
                                f"sqlite:///{tmp_path / 'other.db'}", "--host", "::1", "--port", str(port)],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
        assert again.stderr.startswith(f"error: storage-proxy: cannot listen on [::1]:{port}")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert f"storage proxy for sqlite:///{db} on grpc://[::1]:{port}" in stdout
    assert "storage proxy stopped" in stdout and "Traceback" not in stderr
    direct = optuna.load_study(study_name="via-proxy", storage=st.open_storage(f"sqlite:///{db}"))
    stored = direct.get_trials()
    assert stored[0].values == [0.5, 1e6] and stored[0].user_attrs == {"who": "worker"}
    assert stored[lost.number].state == TrialState.FAIL and "no beat from worker 1" in \
        stored[lost.number].user_attrs["fail_reason"]
    assert [t.system_attrs["fixed_params"] for t in stored if t.state == TrialState.WAITING] == [{"x": "remote"}]
