"""The README's workflow ("A search, start to finish") runs as written, in
its order, on a fresh study: the compare example compares studies that can
be compared, the knee of a promoted front is an attention design that
ablate takes, train validates on promote's images whatever its seed, and an
explicit default --val-size is the default budget."""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution

import nas
import nas.workflows.retrain
from nas.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
#: what makes the README's commands quick here: the same commands, a tiny budget
SEARCH_TINY = ["--trials", "3", "--timeout", "0", "--epochs", "0.5", "--subset", "200", "--val-size", "100",
               "--precision", "fp32"]
TRAIN_TINY = ["--epochs", "0.5", "--subset", "200", "--val-size", "100", "--precision", "fp32"]


def workflow() -> list[list[str]]:
    """The commands of the README's "A search, start to finish" block, in
    order, as argument lists (comments dropped)."""
    text = README.read_text()
    section = text[text.index("## A search, start to finish"):]
    commands = []
    for line in section.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            if commands:
                break
            continue
        line = line.split("#", 1)[0].strip()
        if line.startswith("python search.py"):
            commands.append(shlex.split(line)[2:])
    return commands


def quick(monkeypatch) -> None:
    """The plain kernels, nothing compiled and ablate's step timing stood
    in: seconds, not minutes, for the full-width SK models of a tiny run."""
    import nas.workflows.ablate

    monkeypatch.setenv("NAS_KERNELS", "reference")
    monkeypatch.setenv("NAS_COMPILE_AFTER", "never")
    monkeypatch.setattr(nas.workflows.ablate, "measure_step_latency", lambda *args, **kwargs: 1.0)


def _option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


# --------------------------------------------------------------------------- (a) compare


def test_the_readme_compares_studies_searched_at_one_budget():
    """Every study the README's compare line names is searched earlier in
    the workflow, and at one budget (the budget compare checks), so compare
    does not refuse them; the old example (se at 10,000 images, sk at
    20,000) was refused."""
    from nas.cli import _override_fidelity
    from nas.report.compare import _BUDGET_KEYS
    from nas.search.space import load_space

    commands = workflow()
    searches = {}
    for argv in commands:
        if argv and argv[0] == "--space":
            args = argparse.Namespace(epochs=None, subset=None, val_size=None)
            for key in ("epochs", "subset", "val_size"):
                values = _option(argv, "--" + key.replace("_", "-"))
                if values:
                    setattr(args, key, (float if key == "epochs" else int)(values[-1]))
            space = load_space(argv[1])
            _override_fidelity(space, args)
            study = (_option(argv, "--study") or [space.name])[-1]
            f = space.fidelity.as_dict()
            f["epochs"] = f["rungs"][-1]
            searches[study] = {k: f.get(k) for k in _BUDGET_KEYS}
    compares = [argv for argv in commands if argv[0] == "compare"]
    assert compares, "the README's workflow has a compare example"
    for argv in compares:
        names = _option(argv, "--study")
        assert len(names) >= 2 and "--allow-different-fidelity" not in argv
        assert all(n in searches for n in names), f"{names}: not every study is searched before compare"
        budgets = [searches[n] for n in names]
        assert all(b == budgets[0] for b in budgets), budgets


# --------------------------------------------------------------------------- (b) knee, ablate


def _config(attention: bool) -> str:
    cfg = nas.preset_config("resnet20", width_multiplier=0.25)
    if attention:
        for b in cfg.stages[2].blocks:
            b.attention = nas.model.config.AttentionSpec("se", params={"r": 2})
    return cfg.to_yaml()


def _front_study(points):
    """(accuracy, MACs, attention?, marked baseline?) per trial."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"s3.type": CategoricalDistribution(["none", "se"])}
    for i, (acc, macs, attention, marked) in enumerate(points):
        attrs = {"macs": macs, "params": 1000 + i, "structure_hash": f"h{i}", "config": _config(attention)}
        if marked:
            attrs["baseline"] = True
        study.add_trial(optuna.trial.create_trial(values=[acc, macs], params={"s3.type": "se" if attention else "none"},
                                                  distributions=dist, user_attrs=attrs))
    return study


def test_the_knee_is_an_attention_design_when_the_front_has_one():
    from nas.report.export import pick_trial

    # an SK-like front: attention designs cheaper than the baseline. Both ends score 0 on the knee's
    # distance and the tie went to accuracy: the baseline (trial 1) was the knee
    study = _front_study([(0.80, 28e6, True, False), (0.85, 40e6, False, True), (0.70, 45e6, True, False)])
    assert pick_trial(study, "knee").number == 0
    # the baseline in the middle of the front, above the line: it was the knee; now the designs' knee
    study = _front_study([(0.70, 5e6, True, False), (0.85, 10e6, False, True), (0.86, 40e6, True, False),
                          (0.60, 50e6, True, False)])
    assert pick_trial(study, "knee").number == 2
    from nas.report.export import knee_candidates
    from nas.search.results import is_baseline

    assert [t.number for t in knee_candidates(nas.search.results.pareto_front(study))[1]] == [1]
    # an attention-free architecture without the mark (a study made before baselines) counts as the baseline
    study = _front_study([(0.80, 28e6, True, False), (0.85, 40e6, False, False)])
    assert is_baseline(study.trials[1]) and not is_baseline(study.trials[0])
    assert pick_trial(study, "knee").number == 0
    # the explicit picks still reach it, and a front of the baseline alone has it as its knee
    assert pick_trial(study, "accuracy").number == 1
    alone = _front_study([(0.85, 40e6, False, True), (0.80, 45e6, True, False)])
    assert pick_trial(alone, "knee").number == 0


def test_export_says_the_baseline_is_left_out_and_ablate_of_the_baseline_says_what_to_do(tmp_path, capsys,
                                                                                          cifar10_root):
    storage = f"sqlite:///{tmp_path}/nas.db"
    study = _front_study([(0.80, 28e6, True, False), (0.85, 40e6, False, True)])
    stored = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    for t in study.trials:
        cfg = nas.ArchConfig.from_yaml(t.user_attrs["config"])
        cost = nas.profile(nas.build_model(cfg), 32)
        attrs = {**t.user_attrs, "macs": cost["macs"], "params": cost["params"],
                 "structure_hash": cfg.structure_hash()}
        stored.add_trial(optuna.trial.create_trial(values=t.values, params=t.params, distributions=t.distributions,
                                                   user_attrs=attrs))
    out = tmp_path / "best.yaml"
    assert main(["export", "--study", "s", "--storage", storage, "--pick", "knee", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "knee of the Pareto front: trial 0" in printed
    assert "the attention-free baseline (trial 1) is left out" in printed
    assert nas.load_config(out).structure_hash() == stored.trials[0].user_attrs["structure_hash"]

    # ablate of the baseline (e.g. exported with --trial) is refused in one line that says what to do
    base = tmp_path / "base.yaml"
    assert main(["export", "--study", "s", "--storage", storage, "--trial", "1", "-o", str(base)]) == 0
    capsys.readouterr()
    assert main(["ablate", str(base), "--storage", f"sqlite:///{tmp_path}/x.db", "--data", str(cifar10_root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no attention in any stage" in err
    assert "python search.py export --study s --pick knee" in err
    assert not (tmp_path / "x.db").exists()


# --------------------------------------------------------------------------- (d) train's validation images


class _Stop(Exception):
    pass


def _captured_split(monkeypatch, argv):
    """The training and validation tensors `search.py train ARGV` hands the
    trainer (which is stopped there)."""
    seen = {}

    def fake_train(model, train_images, train_labels, val_images, val_labels, *args, **kwargs):
        seen.update(train=train_images, train_labels=train_labels, val=val_images, val_labels=val_labels)
        raise _Stop

    monkeypatch.setattr(nas.workflows.retrain, "train", fake_train)
    with pytest.raises(_Stop):
        main(["train", *argv])
    return seen


def test_train_validates_on_promotes_images_whatever_the_seed(tmp_path, cifar10_root, monkeypatch):
    from nas.training.datasets import load_dataset
    from nas.training.evaluate import full_budget, load_training_data

    path = tmp_path / "r.yaml"
    nas.preset_config("resnet20", width_multiplier=0.25).save(path)
    common = [str(path), "--data", str(cifar10_root), "--subset", "300", "--precision", "fp32"]
    seed0 = _captured_split(monkeypatch, [*common, "--seed", "0"])
    seed1 = _captured_split(monkeypatch, [*common, "--seed", "1"])
    assert torch.equal(seed0["val"], seed1["val"]) and torch.equal(seed0["val_labels"], seed1["val_labels"])
    assert torch.equal(seed0["train"], seed1["train"])
    # promote's images at the same budget: its validation (the confirmation images) and training images
    promoted = load_training_data(full_budget("cifar10", subset=300), images=load_dataset("cifar10", cifar10_root))
    assert torch.equal(seed1["val"], promoted.val_images) and torch.equal(seed1["val_labels"], promoted.val_labels)
    assert torch.equal(seed1["train"], promoted.train_images)
    assert len(seed1["val"]) == 5000 and len(seed1["train"]) == 300

    # training excludes both held-out splits: the search's validation images and the confirmation images
    labels = load_dataset("cifar10", cifar10_root).train_labels
    full = nas.workflows.retrain.train_splits(labels)
    held = nas.training.evaluate.budget_splits(labels, None, None)
    assert torch.equal(full.val, held.confirm) and len(full.train) == 40000
    assert not set(full.train.tolist()) & (set(held.val.tolist()) | set(held.confirm.tolist()))
    # --val-size 0: nothing held out, every training image trained on
    everything = _captured_split(monkeypatch, [str(path), "--data", str(cifar10_root), "--val-size", "0",
                                               "--precision", "fp32"])
    assert len(everything["val"]) == 0 and len(everything["train"]) == 50000


# --------------------------------------------------------------------------- (e) an explicit default --val-size


def test_an_explicit_default_val_size_is_the_default_budget(cifar10_root):
    from nas.cli import _default_as_none
    from nas.training.evaluate import full_budget

    assert _default_as_none(5000, "cifar10", str(cifar10_root)) is None
    assert _default_as_none(100, "cifar10", str(cifar10_root)) == 100
    assert _default_as_none(None, "cifar10", str(cifar10_root)) is None
    explicit = full_budget("cifar10", 10, 20000, _default_as_none(5000, "cifar10", str(cifar10_root)))
    assert explicit.budget_key() == full_budget("cifar10", 10, 20000, None).budget_key()


def test_ablate_resumed_with_an_explicit_default_val_size_is_not_another_budget(tmp_path, cifar10_root, monkeypatch,
                                                                                 capsys):
    monkeypatch.chdir(tmp_path)
    quick(monkeypatch)
    cfg = nas.ArchConfig.from_yaml(_config(attention=True))
    path = tmp_path / "one.yaml"
    cfg.save(path)
    args = ["ablate", str(path), "--storage", f"sqlite:///{tmp_path}/nas.db", "--data", str(cifar10_root),
            "--seeds", "1", "--epochs", "0.5", "--subset", "200", "--precision", "fp32"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--val-size", "5000"]) == 0, capsys.readouterr().err
    assert "every training was stored already" in capsys.readouterr().out


# --------------------------------------------------------------------------- the whole workflow


def test_the_readme_workflow_runs_as_written_on_a_fresh_study(tmp_path, cifar10_root, monkeypatch, capsys):
    """Every command of the README's block, in its order, in an empty
    folder (default storage), each with a tiny budget appended; calibrate
    (optional) and the dashboard (a server) are left out."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAS_DATA", str(cifar10_root))
    monkeypatch.delenv("NAS_STORAGE", raising=False)
    quick(monkeypatch)
    ran = []
    for argv in workflow():
        command = argv[0]
        if command in ("calibrate", "dashboard"):
            continue
        extra = {"--space": SEARCH_TINY, "promote": ["--seeds", "1", *TRAIN_TINY],
                 "ablate": ["--seeds", "1", *TRAIN_TINY], "train": TRAIN_TINY}.get(command, [])
        capsys.readouterr()
        rc = main([*argv, *extra])
        out, err = capsys.readouterr()
        if command == "ablate" and rc == 2 and "no attention in any stage" in err:
            # the promoted front holds the baseline alone: export's knee is the baseline, and ablate says so
            assert "no attention design is on the front" in ran[-1][1]
            assert err.count("\n") == 1 and "--pick knee" in err
        else:
            assert rc == 0, f"{' '.join(argv)}: {err}"
        if command == "promote":
            assert re.search(r"promote budget: \d+ architectures x 1 seeds x 0.5 epochs x 200 images", out), out
        ran.append((command, out))
    assert [c for c, _ in ran] == ["spaces", "--space", "--space", "report", "compare", "promote", "export",
                                   "ablate", "train"]
    assert (tmp_path / "sk-best.yaml").is_file() and (tmp_path / "sk-best.results.yaml").is_file()
