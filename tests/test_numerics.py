"""Numerics fixed per study, recorded per trial (issue 35 item 1): the kernel
choices a study's first run measured are the ones every later run takes,
whatever the timing says then; a plan from another kind of machine is
refused in one line; the train command keeps its plan beside the config."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml

import nas
from nas import device
from nas.cli import main
from nas.errors import NasError
from nas.kernels import choice as kernel_choice
from nas.kernels.plan import PLAN_ATTR, PlanFile, check_plan, machine_kind, planned
from nas.model.config import AttentionSpec
from nas.training.budget import Fidelity
from nas.training.evaluate import build_seeded, train_architecture

optuna.logging.set_verbosity(optuna.logging.ERROR)
REPO = Path(__file__).resolve().parents[1]


def _sk_config():
    cfg = nas.preset_config("resnet20", width_multiplier=0.25)
    for block in cfg.stages[2].blocks:
        block.attention = AttentionSpec(type="sk", params={"M": 2, "G": 4, "r": 4, "L": 4})
    return cfg


def _race(monkeypatch, fp32_wins: bool) -> None:
    """A fresh process (no choices yet) whose timing race says fp32 (or the
    autocast dtype) is faster for every op: what two processes on a busy
    machine can see."""
    monkeypatch.setattr(kernel_choice, "_kernel_choices", {})
    monkeypatch.setattr(kernel_choice, "_trained_choices", {})

    def timed(fn, tensors, fp32, device_type, backward, repeats=1, give_up=float("inf")):
        return 1.0 if fp32 == fp32_wins else 2.0

    monkeypatch.setattr(kernel_choice, "_time_formulation", timed)


def _train(cfg, data, runtime) -> dict[str, torch.Tensor]:
    fidelity = Fidelity(subset=None, rungs=[1.0], batch_size=16, lr=0.1, warmup=0.1)
    model = build_seeded(cfg, 0, runtime)
    train_architecture(cfg, data, fidelity, 0, runtime, model=model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_same_config_and_seed_train_identically_under_the_studys_plan(monkeypatch, tiny_data):
    monkeypatch.delenv("NAS_KERNELS", raising=False)
    runtime = device.resolve_runtime("cpu", "bf16")
    cfg = _sk_config()
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()

    _race(monkeypatch, fp32_wins=True)  # the study's first process: fp32 won the race
    with planned(study, trial) as first:
        weights = _train(cfg, data=tiny_data, runtime=runtime)
    plan = study.user_attrs[PLAN_ATTR]
    assert plan["machine"] == machine_kind() and plan["choices"]
    assert first.used and all(fp32 for _, fp32 in first.used.values())
    recorded = study.trials[0].user_attrs[PLAN_ATTR]
    assert recorded["choices"] == {k: list(v) for k, v in first.used.items()} and recorded["planned"]

    _race(monkeypatch, fp32_wins=False)  # another process: the race now says bf16
    with planned(study, None) as second:
        again = _train(cfg, data=tiny_data, runtime=runtime)
    assert second.used == first.used and not second.measured
    assert all(torch.equal(weights[k], again[k]) for k in weights)  # bit for bit

    _race(monkeypatch, fp32_wins=False)  # without the plan the race decides: other numerics
    raced = _train(cfg, data=tiny_data, runtime=runtime)
    assert any(not torch.equal(weights[k], raced[k]) for k in weights if weights[k].is_floating_point())


def test_a_plan_from_another_machine_is_refused_in_one_line_unless_mixing(monkeypatch, tiny_data):
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr(PLAN_ATTR, {"machine": "Some Other CPU (avx2), torch 2.4.0", "choices": {"k": ["x", True]}})
    with pytest.raises(NasError) as err:
        check_plan("s", study.user_attrs)
    message = str(err.value)
    assert "\n" not in message and "Some Other CPU" in message and machine_kind() in message
    assert "--mix-numerics" in message
    check_plan("s", study.user_attrs, mix=True)  # told: no error
    # mixing: this machine's own choices, recorded on the trial as not the study's plan; the plan stays
    monkeypatch.delenv("NAS_KERNELS", raising=False)
    _race(monkeypatch, fp32_wins=True)
    trial = study.ask()
    with planned(study, trial, mix=True) as record:
        _train(_sk_config(), tiny_data, device.resolve_runtime("cpu", "bf16"))
    assert record.used and study.trials[0].user_attrs[PLAN_ATTR]["planned"] is False
    assert study.user_attrs[PLAN_ATTR]["choices"] == {"k": ["x", True]}


def test_resuming_a_search_planned_elsewhere_is_one_line_and_writes_nothing(tmp_path, cifar10_root, capsys):
    url = f"sqlite:///{tmp_path}/nas.db"
    args = ["--space", "se", "--study", "elsewhere", "--storage", url, "--data", str(cifar10_root), "--subset", "200",
            "--val-size", "100", "--epochs", "1", "--trials", "1", "--timeout", "0"]
    study = optuna.create_study(study_name="elsewhere", storage=url, directions=["maximize", "minimize"])
    study.set_user_attr(PLAN_ATTR, {"machine": "Some Other CPU (avx2), torch 2.4.0", "choices": {}})
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--mix-numerics" in err and "Traceback" not in err
    assert len(optuna.load_study(study_name="elsewhere", storage=url).trials) == 0


def test_plan_file_round_trips_and_a_broken_one_is_one_line(tmp_path):
    f = PlanFile(tmp_path / "m.numerics.yaml")
    assert f.user_attrs == {}
    f.set_user_attr(PLAN_ATTR, {"machine": "m", "choices": {"(1,)": ["plain", False]}})
    assert f.user_attrs == {PLAN_ATTR: {"machine": "m", "choices": {"(1,)": ["plain", False]}}}
    (tmp_path / "m.numerics.yaml").write_text("{not: [yaml")
    with pytest.raises(NasError, match="not a numerics plan"):
        f.user_attrs


def _train_in_a_fresh_process(cfg_path, data_root) -> dict:
    cmd = [sys.executable, str(REPO / "search.py"), "train", str(cfg_path), "--epochs", "1", "--subset", "400",
           "--val-size", "200", "--batch-size", "50", "--precision", "bf16", "--data", str(data_root)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    results = yaml.safe_load(cfg_path.with_name(cfg_path.stem + ".results.yaml").read_text())
    weights = torch.load(cfg_path.with_suffix(".pt"), weights_only=True)["state_dict"]
    return {"results": results, "weights": weights}


def test_two_fresh_processes_train_the_same_config_and_seed_to_the_same_accuracy(tmp_path, cifar10_root):
    # The first `train` of a config measures its kernel choices and keeps them beside the config; a second,
    # separate process takes them whatever its own timing would say: the same accuracy, to the last bit.
    cfg_path = tmp_path / "sk.yaml"
    _sk_config().save(cfg_path)
    plan_path = tmp_path / "sk.numerics.yaml"
    first = _train_in_a_fresh_process(cfg_path, cifar10_root)
    plan = yaml.safe_load(plan_path.read_text())
    assert plan["machine"] == machine_kind() and plan["choices"]
    assert first["results"]["numerics"]["choices"] == plan["choices"]

    second = _train_in_a_fresh_process(cfg_path, cifar10_root)
    assert yaml.safe_load(plan_path.read_text()) == plan  # taken, not measured again
    assert second["results"]["numerics"]["choices"] == plan["choices"]
    for key in ("val_accuracy", "test_accuracy", "test_accuracy_flip_tta"):
        assert second["results"][key] == first["results"][key], key
    assert all(torch.equal(first["weights"][k], second["weights"][k]) for k in first["weights"])

    # and the plan is what decides: a third process under a plan with every precision swapped runs that plan
    swapped = {key: [formulation, not fp32] for key, (formulation, fp32) in plan["choices"].items()}
    plan_path.write_text(yaml.safe_dump({**plan, "choices": swapped}))
    third = _train_in_a_fresh_process(cfg_path, cifar10_root)
    assert third["results"]["numerics"]["choices"] == swapped
