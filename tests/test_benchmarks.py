"""The long benchmarks' epoch log (benchmarks/_cifar.py, ArmLog): what a
resumed run keeps, sets aside, and records about the machines it ran on."""
from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import _cifar  # noqa: E402

SETUP = {"epochs": 50.0, "cpu": "AMD EPYC", "precision": "fp32"}
AVX2 = {"cpu": "AMD EPYC", "isa": "avx2"}
AVX512 = {"cpu": "AMD EPYC", "isa": "avx512_bf16"}


def test_resume_on_another_machine_records_where_each_arm_was(tmp_path):
    path = tmp_path / "run.json"
    log = _cifar.ArmLog(path, SETUP, AVX2)
    log.append("ours", 1.0, 0.40, 150.0)
    log.append("naive", 1.0, 0.35, 210.0)
    log.append("ours", 2.0, 0.55, 300.0)

    again = _cifar.ArmLog(path, SETUP, AVX2)  # the same machine: nothing new to record
    again.append("naive", 2.0, 0.50, 420.0)
    assert [m["machine"] for m in json.loads(path.read_text())["machines"]] == [AVX2]

    moved = _cifar.ArmLog(path, SETUP, AVX512)
    assert moved.rows("ours")[-1] == [2.0, 0.55, 300.0]  # the rows carry over
    moved.append("ours", 3.0, 0.60, 400.0)
    saved = json.loads(path.read_text())
    assert saved["machines"] == [{"machine": AVX2, "from_epochs": {}},
                                 {"machine": AVX512, "from_epochs": {"ours": 2.0, "naive": 2.0}}]
    assert saved["arms"]["ours"]["rows"][-1] == [3.0, 0.60, 400.0]


def test_another_setup_is_set_aside_with_its_states(tmp_path):
    path = tmp_path / "run.json"
    log = _cifar.ArmLog(path, SETUP, AVX2)
    log.append("ours", 1.0, 0.40, 150.0)
    log.state_file("ours").write_bytes(b"state")

    other = _cifar.ArmLog(path, {**SETUP, "precision": "bf16"}, AVX512)
    assert other.rows("ours") == [] and other.machines == [{"machine": AVX512, "from_epochs": {}}]
    assert not log.state_file("ours").exists()  # never resumed into the other setup
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.json.other-")]
    assert len(aside) == 1 and json.loads(aside[0].read_text())["arms"]["ours"]["rows"] == [[1.0, 0.40, 150.0]]


@pytest.mark.parametrize("flags, isa", [("fpu avx2 avx512f avx512_bf16", "avx512_bf16"),
                                         ("fpu avx2 amx_bf16 avx512f", "amx_bf16"),
                                         ("fpu sse4_2 avx2", "avx2"), ("fpu sse4_2", "below avx2")])
def test_cpu_isa_names_the_widest_unit(monkeypatch, tmp_path, flags, isa):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"model name\t: AMD EPYC\nflags\t\t: {flags}\n")
    # a module global named open shadows the builtin for _cifar alone
    monkeypatch.setattr(_cifar, "open", lambda p, *a, **k: open(cpuinfo if p == "/proc/cpuinfo" else p, *a, **k),
                        raising=False)
    assert _cifar.cpu_isa() == isa


def test_space_speed_reports_a_failed_training_instead_of_stopping(tmp_path):
    import space_speed

    got = space_speed.run(REPO, tmp_path / "no-such-arch.yaml", tmp_path / "no-data.pt", "sk", 1)
    assert set(got) == {"error"}
    assert "no-data.pt" in got["error"] or "no-such-arch.yaml" in got["error"]
