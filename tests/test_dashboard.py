"""The study in optuna-dashboard (nas/dashboard.py): the study note and the
artifacts, refreshed rather than duplicated, and what a real browser shows
(headless Chromium against ``search.py dashboard`` on 127.0.0.1)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from html import unescape
from pathlib import Path

import optuna
import pytest
from conftest import free_port, stop_server
from optuna_dashboard import get_note

import nas
from nas.report import note as dashboard
from nas.report.report import write_report
from nas.search.space import load_space
from nas.storage import artifacts as artifact_files

REPO = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _study_of_se(tmp_path: Path) -> tuple[optuna.Study, str]:
    """A study of the ``se`` space as ``search`` leaves it (space, fidelity,
    baseline, trials with their configs and costs), made without training:
    the accuracies are set by hand."""
    space = load_space("se")
    url = f"sqlite:///{tmp_path}/nas.db"
    study = optuna.create_study(study_name="se-dash", storage=url, directions=["maximize", "minimize"])
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "macs"])
    baseline = space.baseline_params()
    for key, value in {"space_yaml": space.source, "space_name": "se", "fidelity": space.fidelity.as_dict(),
                       "data_fingerprint": "f" * 64, "baseline_params": baseline}.items():
        study.set_user_attr(key, value)
    rows = [({**baseline}, 0.60, True), ({**baseline, "s3.type": "se"}, 0.66, False),
            ({**baseline, "s2.type": "se", "s3.type": "se"}, 0.64, False)]  # the last is dominated
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))  # draws the other params
    for params, accuracy, is_baseline in rows:
        scratch.enqueue_trial(params)
        cfg = space.sample(scratch.ask())
        drawn = scratch.trials[-1]
        cost = nas.profile(nas.build_model(cfg), cfg.input_size)
        attrs = {"macs": cost["macs"], "params": cost["params"], "structure_hash": cfg.structure_hash(),
                 "config": cfg.to_yaml(), "seed_accuracies": [accuracy - 0.01, accuracy + 0.01],
                 "accuracy_std": 0.0141, **({"baseline": True} if is_baseline else {})}
        study.add_trial(optuna.trial.create_trial(params=drawn.params, distributions=drawn.distributions,
                                                  values=[accuracy, cost["macs"]], user_attrs=attrs))
    return study, url


def test_note_has_space_fidelity_front_hypervolume_baseline_and_export_command(tmp_path):
    study, url = _study_of_se(tmp_path)
    body = dashboard.refresh_note(study, url)
    assert get_note(study) == body
    assert body.startswith(dashboard.NOTE_HEADER)
    assert "**Space** `se`" in body and "```yaml" in body and load_space("se").source.strip() in body
    assert "**Fidelity**" in body and "rungs " in body and "repeats 1" in body
    # the front: the baseline and the SE trial, not the dominated third; ± and Δ against the baseline
    rows = [line for line in body.splitlines() if re.match(r"\| \d", line)]
    assert [row.split(" | ")[0] for row in rows] == ["| 0 (baseline)", "| 1"]
    # accuracy and Δ on the seeds drawn after selection (each trial's second seed: 0.67 and 0.61)
    assert "| 0.6700 | 0.0141 | 2 |" in rows[1] and "| +0.0600 |" in rows[1]
    base_macs = study.trials[0].user_attrs["macs"]
    added = study.trials[1].user_attrs["macs"] - base_macs  # SE on stage 3: ~1K MACs, shown in K
    assert 0 < added < 1e5 and f"| +{added / 1e3:.1f}K |" in rows[1]
    assert re.search(r"\*\*Hypervolume\*\* \d+\.\d{4} \(reference point: accuracy 0, [\d.]+M MACs\)", body)
    assert f"**Baseline** (no attention): trial 0, accuracy 0.6100 ± 0.0141, {base_macs / 1e6:.2f}M MACs" in body
    knee = nas.report.export.pick_trial(study, "knee").number
    assert (f"python search.py export --study se-dash --storage {url} --trial {knee} -o se-dash-trial{knee}.yaml"
            in body)
    # an unchanged note is not written again (each write is a new version of it)
    version = study._storage.get_study_system_attrs(study._study_id)["dashboard:note_ver"]
    assert dashboard.refresh_note(study, url) == body
    assert study._storage.get_study_system_attrs(study._study_id)["dashboard:note_ver"] == version
    # a storage with a password: the command neither carries it nor a *** that would not run
    secret = dashboard._export_commands("s", "postgresql+psycopg2://nas:hunter2@db/nas", 3)
    assert "hunter2" not in secret and "***@db" in secret.splitlines()[0] and "--storage" not in secret
    assert secret.splitlines()[1] == "python search.py export --study s --trial 3 -o s-trial3.yaml"


def test_report_twice_refreshes_the_note_and_artifacts_without_duplicates(tmp_path):
    study, url = _study_of_se(tmp_path)
    folder = tmp_path / "artifacts"
    out = write_report(study, tmp_path / "report")
    first = dashboard.publish(study, out, url, folder)
    assert first["artifacts"] == {"study": ["pareto.png", "trials.csv"]}
    study.add_trial(optuna.trial.create_trial(  # a new, better trial changes the front
        params=study.trials[1].params, distributions=study.trials[1].distributions,
        values=[0.7, study.trials[1].values[1]],
        user_attrs={**study.trials[1].user_attrs, "seed_accuracies": [0.7], "accuracy_std": None}))
    out = write_report(study, tmp_path / "report")
    second = dashboard.publish(study, out, url, folder)
    assert get_note(study) == second["note"] != first["note"]  # replaced, not appended
    assert second["note"].count(dashboard.NOTE_HEADER) == 1 and "| 3 | 0.7000* |" in second["note"]
    on_study = artifact_files.study_artifacts(study)
    assert sorted(on_study) == ["pareto.png", "trials.csv"]  # once each after two reports
    assert sorted(os.listdir(folder)) == sorted(on_study.values())
    stored = (folder / on_study["trials.csv"]).read_text()
    assert stored == (tmp_path / "report" / "trials.csv").read_text() and "\n3," in stored  # the refreshed one
    assert (folder / on_study["pareto.png"]).read_bytes() == (tmp_path / "report" / "pareto.png").read_bytes()


def test_artifact_folder_sits_beside_the_storage(tmp_path, monkeypatch):
    monkeypatch.delenv(artifact_files.ARTIFACT_DIR_ENV, raising=False)
    assert artifact_files.artifact_dir(None) == Path("studies/nas-artifacts")
    assert artifact_files.artifact_dir("sqlite:////data/x/s.db") == Path("/data/x/s-artifacts")
    assert artifact_files.artifact_dir("runs/w.journal") == Path("runs/w-artifacts")
    assert artifact_files.artifact_dir("postgresql+psycopg2://u:p@h/db") == Path("studies/artifacts")
    assert artifact_files.artifact_dir("grpc://h:13000", "elsewhere") == Path("elsewhere")
    monkeypatch.setenv(artifact_files.ARTIFACT_DIR_ENV, str(tmp_path))
    assert artifact_files.artifact_dir("sqlite:///a.db") == tmp_path


# --------------------------------------------------------------------------- a real browser


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed in CI: .ci/run should have installed Debian's chromium")
        pytest.skip("no chromium (Debian: apt-get install chromium; .ci/run does this)")
    return found


def _chromium_args(profile: Path) -> list[str]:
    # a closed network: no background connections, no first-run, a fresh profile
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
            "--window-size=1400,2400"]


def test_a_browser_shows_the_note_and_the_artifacts(tmp_path):
    """``search.py dashboard`` serves the study; headless Chromium renders the
    study page (the dashboard is a JavaScript app: only a browser runs it) and
    the rendered page holds the note's front table and the artifacts' links.
    The screenshot stays in the test's tmp dir (dashboard.png)."""
    browser = _chromium()
    study, url = _study_of_se(tmp_path)
    folder = tmp_path / "artifacts"
    dashboard.publish(study, write_report(study, tmp_path / "report"), url, folder)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "search.py"), "dashboard", "--storage", url, "--port",
                               str(port), "--artifact-dir", str(folder)], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, server.communicate()[0][-2000:]
                time.sleep(0.2)
        study_page = f"http://127.0.0.1:{port}/dashboard/studies/{study._study_id}"
        pages = {}
        for name, url_, extra in (("note", study_page + "/note", [f"--screenshot={tmp_path / 'dashboard.png'}"]),
                                  ("study", study_page, [])):
            shown = subprocess.run([browser, *_chromium_args(tmp_path / f"profile-{name}"), *extra, "--dump-dom",
                                    url_], capture_output=True, text=True, timeout=180)
            assert shown.returncode == 0 and "</html>" in shown.stdout, shown.stderr[-2000:]
            pages[name] = shown.stdout
            (tmp_path / f"dashboard-{name}.html").write_text(shown.stdout)
    finally:
        stop_server(server, signal.SIGINT)
    # the note's page, rendered from Markdown: its front table (a real <table>), the hypervolume, the export command
    html = pages["note"]
    tables = [t for t in re.findall(r"<table.*?</table>", html, re.S) if "0 (baseline)" in t]
    assert len(tables) == 1 and "+0.0600" in tables[0] and "0.0141" in tables[0], html[-3000:]
    text = unescape(re.sub(r"<[^>]+>", "", html))  # the code block is syntax-highlighted: words in spans
    assert re.search(r"Hypervolume \d+\.\d{4} \(reference point: accuracy 0, ", text), text[-2000:]
    assert re.search(r"python search\.py export --study se-dash --storage \S+ --trial 1 -o se-dash-trial1\.yaml", text)
    # the study's page: its artifacts, as download links into the artifact store
    artifacts = artifact_files.study_artifacts(study)
    assert sorted(artifacts) == ["pareto.png", "trials.csv"]
    for name, artifact_id in artifacts.items():
        assert re.search(rf'download="{re.escape(name)}" href="/artifacts/{study._study_id}/{artifact_id}"',
                         pages["study"]), name
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
