"""Several workers on one study, and workers that die: through the real CLI,
on a journal file, SQLite (one writer), a real PostgreSQL, and the same
PostgreSQL behind Optuna's gRPC storage proxy (``search.py storage-proxy``,
workers on ``grpc://127.0.0.1:PORT``).

PostgreSQL: set ``NAS_TEST_POSTGRES`` to a SQLAlchemy URL of an empty
database you may write to (`.ci/run` starts one on 127.0.0.1 and sets it).
Outside CI, the tests that need it skip, saying so; in CI they fail instead.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import free_port, stop_server
from optuna.trial import TrialState

from nas.storage.backends import open_storage

REPO = Path(__file__).resolve().parents[1]
TINY = ["--subset", "200", "--val-size", "200", "--epochs", "1", "--timeout", "0"]
#: long enough per trial (a few seconds) to be killed in the middle of one
SLOW = ["--subset", "1000", "--val-size", "200", "--epochs", "2", "--timeout", "0"]
POSTGRES = os.environ.get("NAS_TEST_POSTGRES")


def _postgres() -> str:
    if not POSTGRES:
        if os.environ.get("CI") == "true":
            pytest.fail("NAS_TEST_POSTGRES is not set in CI: .ci/run should have started PostgreSQL")
        pytest.skip("no PostgreSQL: set NAS_TEST_POSTGRES=postgresql+psycopg2://USER:PASSWORD@127.0.0.1/DB "
                    "(.ci/run does this)")
    return POSTGRES


@pytest.fixture
def postgres_proxy(tmp_path):
    """``search.py storage-proxy`` in front of the test PostgreSQL (its URL,
    with the password, by environment: not on the command line); yields the
    workers' ``grpc://`` URL and the proxy process."""
    port = free_port()
    proc = subprocess.Popen(_search("storage-proxy", "--port", port), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, NAS_STORAGE=_postgres()))
    url = f"grpc://127.0.0.1:{port}"
    try:
        open_storage(url)  # waits until it answers
        yield url, proc
    finally:
        stop_server(proc, signal.SIGTERM)


def _storage(kind: str, tmp_path: Path, request) -> str:
    if kind == "journal":
        return str(tmp_path / "nas.journal")
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/nas.db"
    if kind == "grpc":
        return request.getfixturevalue("postgres_proxy")[0]
    return _postgres()


def _search(*args) -> list[str]:
    return [sys.executable, str(REPO / "search.py"), *map(str, args)]


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(deepcopy=False)


# the proxy's case is Optuna's "4 workers x 5 trials"; the others two trials each
@pytest.mark.parametrize("kind,n_trials", [("journal", 8), ("postgresql", 8), ("grpc", 20)])
def test_four_workers_record_exactly_the_trials_asked_for(kind, n_trials, tmp_path, cifar10_root, request):
    storage = _storage(kind, tmp_path, request)
    study = f"w4_{uuid.uuid4().hex[:8]}"  # PostgreSQL is shared between runs: a fresh study each time
    out = subprocess.run(_search("--space", "se", "--study", study, "--workers", 4, "--trials", n_trials,
                                 "--storage", storage, "--data", cifar10_root, *TINY),
                         capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "database is locked" not in out.stdout + out.stderr
    trials = _trials(storage, study)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(trials) == n_trials and len(finished) == n_trials, [(t.number, t.state.name) for t in trials]
    assert sorted(t.number for t in trials) == list(range(n_trials))
    if kind == "grpc":  # what the workers wrote through the proxy is in PostgreSQL itself
        direct = _trials(_postgres(), study)
        assert [(t.number, t.state, t.values) for t in direct] == [(t.number, t.state, t.values) for t in trials]
        # the workers beat through a user attr (the proxy passes no Optuna heartbeat)
        assert all(t.user_attrs["worker"]["beat"] == 60 and "alive_at" in t.user_attrs for t in trials)
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(pids) == 4  # four processes shared the work
    for w in range(1, 5):
        assert f"[w{w}] trial" in out.stdout
    assert "Pareto front of study" in out.stdout
    # report and export read the storage the workers wrote
    rep = subprocess.run(_search("report", "--study", study, "--storage", storage),
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert rep.returncode == 0, rep.stderr
    assert "hypervolume" in rep.stdout
    exported = tmp_path / "best.yaml"
    exp = subprocess.run(_search("export", "--study", study, "--storage", storage, "-o", exported),
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert exp.returncode == 0, exp.stderr
    password = re.search(r"://[^:/@]+:([^@]+)@", storage)
    if password:  # the database password is in no output, user attr or exported file
        secret = password.group(1)
        attrs = optuna.load_study(study_name=study, storage=open_storage(storage)).user_attrs
        for text in (out.stdout, out.stderr, rep.stdout, exp.stdout, str(attrs), exported.read_text()):
            assert secret not in text
        assert ":***@" in exported.read_text() and ":***@" in str(attrs["commands"])


def _wait_for_running(storage: str, study: str, proc: subprocess.Popen, after_finished: int,
                      timeout: float = 300) -> optuna.trial.FrozenTrial:
    """The RUNNING trial of ``proc`` once ``after_finished`` trials have finished."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        try:
            trials = _trials(storage, study)
        except KeyError:  # the study is not created yet
            trials = []
        done = [t for t in trials if t.state.is_finished()]
        running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs
                   and "config" in t.user_attrs]
        if len(done) >= after_finished and running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError("no trial started in time")


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql", "grpc"])
def test_sigkill_mid_trial_then_resume(kind, tmp_path, cifar10_root, request):
    storage = _storage(kind, tmp_path, request)
    study = f"kill_{uuid.uuid4().hex[:8]}"
    common = ["--space", "se", "--study", study, "--storage", storage, "--data", cifar10_root, *SLOW]
    proc = subprocess.Popen(_search(*common, "--trials", 5), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_running(storage, study, proc, after_finished=1)
        time.sleep(1.0)  # inside its training (a trial here trains for several seconds)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    before = _trials(storage, study)
    finished_before = {t.number: (t.state, t.values) for t in before if t.state.is_finished()}
    assert len(finished_before) >= 1
    # the trial the kill interrupted: nothing could clean up after SIGKILL
    running = [t for t in before if t.state == TrialState.RUNNING]
    assert len(running) == 1, [(t.number, t.state.name) for t in before]
    victim = running[0]

    out = subprocess.run(_search(*common, "--trials", 1), capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    after = _trials(storage, study)
    killed = after[victim.number]
    assert killed.state == TrialState.FAIL
    assert "died during the trial" in killed.user_attrs["fail_reason"]
    assert f"trial {victim.number:>4} FAIL" in out.stdout
    retries = [t for t in after if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].state.is_finished()
    assert retries[0].params == victim.params  # the dead trial's architecture, tried again
    assert not any(t.state == TrialState.RUNNING for t in after)
    for number, (state, values) in finished_before.items():  # no finished trial lost or changed
        assert (after[number].state, after[number].values) == (state, values)


def test_sigterm_fails_the_running_trial_and_exits_cleanly(tmp_path, cifar10_root):
    storage = str(tmp_path / "nas.journal")
    proc = subprocess.Popen(_search("--space", "se", "--study", "term", "--storage", storage, "--data", cifar10_root,
                                    *SLOW, "--trials", 5),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = _wait_for_running(storage, "term", proc, after_finished=1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "terminated: the running trial is marked FAIL" in stderr and "resume with: python search.py" in stderr
    assert "Traceback" not in stderr
    trials = _trials(storage, "term")
    assert trials[victim.number].state == TrialState.FAIL
    assert trials[victim.number].user_attrs["fail_reason"] == "terminated (SIGTERM) during the trial"
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 1
