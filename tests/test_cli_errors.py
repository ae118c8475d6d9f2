"""Every bad input of issue 6 item 6, through the real CLI: exit code 2, one
line on stderr that names the problem (no traceback), and nothing written or
lost: a study with a finished trial is in the storage before each call and
is there unchanged after it, and no other file appears."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import nas

REPO = Path(__file__).resolve().parents[1]
# nas.training.datasets' fingerprint of ../shared/data/cifar10-jpeg.tar.gz
JPEG_COPY_FINGERPRINT = "40e0ca1a15d0eb411cca46561b41da24912cc96163825623239d27b420babfdd"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

SPACES = {
    "malformed.yaml": "backbone: resnet20\ntypes: [none, se\nparams: {}\n",
    "unknown_key.yaml": "backbone: resnet20\ntypes: [se]\nbogus: 1\n",
    "wrong_type.yaml": "backbone: resnet20\ntypes: [se]\nparams: {se: {r: fast}}\n",
    "empty_choices.yaml": "backbone: resnet20\ntypes: [se]\nparams: {se: {r: []}}\n",
    "bad_groups.yaml": "backbone: resnet20\ntypes: [sk]\nparams: {sk: {G: [3]}}\n",
    "unreachable.yaml": "backbone: resnet20\ntypes: [none, se]\nconstraints: {max_macs: 1e6}\n",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, cifar10_root):
    """A folder with a study holding one finished trial, the bad space files,
    an empty data folder and a data folder with an undecodable image."""
    root = tmp_path_factory.mktemp("bad_input")
    (root / "studies").mkdir()
    study = optuna.create_study(study_name="done", storage=f"sqlite:///{root}/studies/nas.db",
                                directions=["maximize", "minimize"])
    study.set_user_attr("space_name", "se")
    study.add_trial(optuna.trial.create_trial(values=[0.5, 4e7], params={}, distributions={},
                                              user_attrs={"macs": 4e7, "params": 270000}))
    # a study made on the JPEG copy of CIFAR-10 (its real data fingerprint):
    # on the lossless copy it must not resume
    jpeg = optuna.create_study(study_name="jpeg_copy", storage=f"sqlite:///{root}/studies/nas.db",
                               directions=["maximize", "minimize"])
    jpeg.set_user_attr("space_name", "se")
    jpeg.set_user_attr("data_fingerprint", JPEG_COPY_FINGERPRINT)
    jpeg.add_trial(optuna.trial.create_trial(values=[0.5, 4e7], params={}, distributions={},
                                             user_attrs={"macs": 4e7, "params": 270000}))
    empty = optuna.create_study(study_name="nothing_finished", storage=f"sqlite:///{root}/studies/nas.db",
                                directions=["maximize", "minimize"])
    empty.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={}, distributions={}))
    for name, text in SPACES.items():
        (root / name).write_text(text)
    (root / "malformed_config.yaml").write_text("backbone: [resnet20\n")
    nas.preset_config("resnet20").save(root / "resnet20.yaml")
    (root / "empty_data").mkdir()
    corrupt = root / "corrupt_data"
    for split in ("train", "test"):
        for cls in CLASSES:
            (corrupt / split / cls).mkdir(parents=True)
            first = sorted((cifar10_root / split / cls).iterdir())[0]
            shutil.copy(first, corrupt / split / cls / first.name)
    (corrupt / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


CASES = {
    "unknown space": (["--space", "nosuch"],
                      "unknown space 'nosuch'; available: bam, cbam, danet, ea, eca, emsa, mixed, psa, sa, sc, se, sk"),
    "malformed YAML": (["--space", "malformed.yaml"], "malformed YAML at line 3"),
    "unknown key": (["--space", "unknown_key.yaml"], "unknown key 'bogus'; allowed: description, backbone"),
    "wrong type": (["--space", "wrong_type.yaml"], "params.se.r: expected an integer, got 'fast'"),
    "empty choices": (["--space", "empty_choices.yaml"], "params.se.r: empty choices"),
    "G not dividing channels": (["--space", "bad_groups.yaml"],
                                "params.sk.G: 3 does not fit stage 1 (sk): sk: G=3 must divide input channels=16; "
                                "allowed: 1, 2, 4, 8, 16"),
    "unreachable constraint": (["--space", "unreachable.yaml", "--data", "{data}"],
                               "constraints.max_macs: 1e+06 cannot be met; the cheapest architecture"),
    "missing data folder": (["--space", "se", "--data", "empty_data"], "no usable data in"),
    "corrupt data folder": (["--space", "se", "--data", "corrupt_data"], "cannot decode"),
    "bad storage URL": (["--space", "se", "--data", "{data}", "--storage", "postgres://nas:hunter2@127.0.0.1/x"],
                        "--storage: cannot open 'postgres://nas:***@127.0.0.1/x'"),
    "storage that is no URL": (["--space", "se", "--data", "{data}", "--storage", "studies/nas.db"],
                               "is neither a database URL"),
    "SQLite for several workers": (["--space", "se", "--data", "{data}", "--workers", "2", "--storage",
                                    "sqlite:///studies/nas.db"],
                                   "SQLite is not safe for 2 concurrent workers"),
    "bad --trials": (["--space", "se", "--trials", "0"], "--trials: must be >= 1, got 0"),
    "gRPC storage that is no HOST:PORT": (["--space", "se", "--data", "{data}", "--storage", "grpc://db.example"],
                                          "--storage: 'grpc://db.example' is not grpc://HOST:PORT"),
    "artifact folder that cannot be written": (
        ["--space", "se", "--study", "fresh", "--data", "{data}", "--artifact-dir", "resnet20.yaml"],
        "--artifact-dir: cannot write artifacts to resnet20.yaml"),
    "dashboard: artifact folder that cannot be written": (["dashboard", "--artifact-dir", "resnet20.yaml"],
                                                          "--artifact-dir: cannot write artifacts to resnet20.yaml"),
    "storage-proxy for a journal file": (["storage-proxy", "--storage", "studies/nas.journal"],
                                         "cannot be served: Optuna's gRPC proxy serves database storages only"),
    "unknown study for report": (["report", "--study", "nope"], "no study 'nope' in sqlite:///studies/nas.db; "
                                 "studies there: done, jpeg_copy, nothing_finished"),
    "resume a JPEG-copy study on the original pixels": (
        ["--space", "se", "--study", "jpeg_copy", "--data", "{data}"],
        "study 'jpeg_copy' was run on other data (fingerprint 40e0ca1a15d0, now b37db46fbc8b); use --study NEW_NAME"),
    "unknown study for export": (["export", "--study", "nope", "-o", "x.yaml"], "no study 'nope'"),
    "no finished trial (report)": (["report", "--study", "nothing_finished"], "has no finished trial yet"),
    "no finished trial (export)": (["export", "--study", "nothing_finished", "-o", "x.yaml"],
                                   "has no completed, trained trial yet"),
    "train: no such config": (["train", "no_such.yaml"], "config file not found: no_such.yaml"),
    "train: malformed config": (["train", "malformed_config.yaml"], "malformed YAML at line 2"),
    "train: --lr not a number": (["train", "resnet20.yaml", "--lr", "nan"], "--lr: must be > 0, got nan"),
    "train: negative --weight-decay": (["train", "resnet20.yaml", "--weight-decay=-1e-4"],
                                       "--weight-decay: must be >= 0, got -0.0001"),
}


def _snapshot(root: Path) -> tuple:
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if "cache" not in p.parts)
    study = optuna.load_study(study_name="done", storage=f"sqlite:///{root}/studies/nas.db")
    trials = [(t.number, t.state.name, tuple(t.values or ()), tuple(sorted(t.user_attrs))) for t in study.trials]
    return files, trials, hashlib.sha256((root / "studies" / "nas.db").read_bytes()).hexdigest()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, workdir, cifar10_root):
    args, expected = CASES[case]
    args = [a.replace("{data}", str(cifar10_root)) for a in args]
    before = _snapshot(workdir)
    env = dict(os.environ, NAS_CACHE=str(workdir / "cache"), NAS_DATA=str(workdir / "empty_data"))
    out = subprocess.run([sys.executable, str(REPO / "search.py"), *args], capture_output=True, text=True,
                         cwd=workdir, env=env, timeout=300)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in out.stderr and "hunter2" not in out.stderr + out.stdout
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("variable, value, expected", [
    ("NAS_COMPILE_AFTER", "soon", "NAS_COMPILE_AFTER: 'soon' is not a positive number of calls or 'never'"),
    ("NAS_KERNELS", "fastest", "NAS_KERNELS: 'fastest' is not one of tuned, reference"),
    ("NAS_COMPILE_STEP", "always", "NAS_COMPILE_STEP: 'always' is not one of auto, never"),
])
def test_a_bad_kernel_setting_is_one_line_exit_2_and_changes_nothing(variable, value, expected, workdir,
                                                                      cifar10_root):
    before = _snapshot(workdir)
    env = dict(os.environ, NAS_CACHE=str(workdir / "cache"), **{variable: value})
    out = subprocess.run([sys.executable, str(REPO / "search.py"), "--space", "se", "--study", "done",
                          "--trials", "1", "--data", str(cifar10_root)],
                         capture_output=True, text=True, cwd=workdir, env=env, timeout=300)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert lines == [f"error: {expected}"], out.stderr
    assert _snapshot(workdir) == before
