"""Failures inside a trial (issue 6 item 5): divergence, out of memory on CPU
or GPU, an exception from a module. Each fails that trial with the reason
in its user attrs; the study goes on."""
from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import TrialState

import nas.search.objective as search
import nas.training.evaluate
from nas.device import resolve_runtime
from nas.search.space import parse_space
from nas.storage import artifacts
from nas.training.train import DivergedError

optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_a_failing_trial_records_why_and_the_study_goes_on(monkeypatch, tiny_data):
    space = parse_space("backbone: resnet20\nwidth_multiplier: 0.25\ntypes: [none, se]\nparams: {se: {r: 2}}\n"
                        "sampler: random\nfidelity: {rungs: [1], batch_size: 16}\n", name="t")
    errors = [DivergedError("loss became nan at step 3 of 3"), MemoryError("cannot allocate 9 GiB"),
              torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
              RuntimeError("se: module exploded"), KeyError("a bug in a module")]
    real_train = nas.training.evaluate.train

    def flaky_train(*args, **kwargs):
        if errors:
            raise errors.pop(0)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(nas.training.evaluate, "train", flaky_train)  # what every trial trains through
    # every trial a new architecture: same-architecture reuse would skip training
    objective = search.Objective(space, tiny_data, resolve_runtime("cpu", "fp32"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i in range(6):
        study.enqueue_trial({"s1.type": ["none", "se"][i % 2], "s2.type": ["none", "se"][i // 2 % 2],
                             "s3.type": ["none", "se"][i // 4 % 2]})
    study.optimize(objective, n_trials=6, catch=(search.TrialFailed,))
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 5 + [TrialState.COMPLETE]
    reasons = [t.user_attrs["fail_reason"] for t in trials[:5]]
    assert reasons[0].startswith("DivergedError: loss became nan at step 3")
    assert reasons[1] == "MemoryError: cannot allocate 9 GiB"
    assert reasons[2].startswith("OutOfMemoryError: CUDA out of memory")
    assert reasons[3] == "RuntimeError: se: module exploded"
    assert reasons[4].startswith("KeyError:")
    for t in trials[:5]:  # the cost was recorded before training failed
        assert t.user_attrs["macs"] > 0 and "traceback" in t.user_attrs
    assert 0.0 <= trials[5].values[0] <= 1.0


def test_ctrl_c_is_not_swallowed(tiny_data):
    space = parse_space("backbone: resnet20\nwidth_multiplier: 0.25\ntypes: [none]\n", name="t")
    objective = search.Objective(space, tiny_data, resolve_runtime("cpu", "fp32"))

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nas.training.evaluate, "train", interrupt)
        with pytest.raises(KeyboardInterrupt):
            study.optimize(objective, n_trials=1, catch=(search.TrialFailed,))
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs["fail_reason"] == "interrupted (Ctrl-C) during the trial"


def test_a_failed_artifact_upload_keeps_the_trained_result(monkeypatch, tiny_data, tmp_path):
    """Each completed trial gets its config as an artifact; when that upload
    fails (a full disk, a folder gone), the trial keeps its accuracy and
    records why the artifact is missing."""

    space = parse_space("backbone: resnet20\nwidth_multiplier: 0.25\ntypes: [none, se]\nparams: {se: {r: 2}}\n"
                        "sampler: random\nfidelity: {rungs: [1], batch_size: 16}\n", name="t")
    objective = search.Objective(space, tiny_data, resolve_runtime("cpu", "fp32"), artifacts=tmp_path / "art")
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"s1.type": "none", "s2.type": "none", "s3.type": "none"})
    study.enqueue_trial({"s1.type": "se", "s2.type": "none", "s3.type": "none"})
    study.optimize(objective, n_trials=1)
    attached = artifacts.trial_artifacts(study, study.trials[0])
    assert list(attached) == ["trial-0.yaml"] and (tmp_path / "art" / attached["trial-0.yaml"]).is_file()

    def full_disk(**kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(optuna.artifacts, "upload_artifact", full_disk)
    with pytest.warns(RuntimeWarning, match="trial 1: its config was not attached"):
        study.optimize(objective, n_trials=1)
    second = study.trials[1]
    assert second.state == TrialState.COMPLETE and 0.0 <= second.values[0] <= 1.0
    assert second.user_attrs["artifact_error"] == "OSError: [Errno 28] No space left on device"
    assert artifacts.trial_artifacts(study, second) == {}
