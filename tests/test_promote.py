"""promote and ablate end to end through the CLI on tiny budgets: what is
trained and stored, the link back to the proxy, resuming, export of the
promoted study, --test, and one-line errors."""
from __future__ import annotations

import dataclasses
import math

import optuna
import pytest
from optuna.trial import TrialState

import nas
import nas.training.evaluate
from nas.cli import main
from nas.report.export import pick_trial
from nas.workflows.ablate import variants

SPACE = ("backbone: resnet20\nwidth_multiplier: 0.25\nstages: [3]\ntypes: [none, se, eca, cbam]\n"
         "params: {se: {r: [2, 4]}, cbam: {r: 2}}\nsampler: random\n"
         "fidelity: {subset: 100, val_size: 100, rungs: [0.5], batch_size: 50}\n")
TINY = ["--epochs", "0.5", "--subset", "200", "--val-size", "100", "--precision", "fp32"]


@pytest.fixture
def searched(tmp_path, cifar10_root, monkeypatch):
    """A finished tiny search (study 'tiny': the baseline and 5 sampled trials)."""
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    storage = f"sqlite:///{tmp_path}/nas.db"
    assert main(["--space", str(space), "--study", "tiny", "--trials", "6", "--timeout", "0", "--storage", storage,
                 "--data", str(cifar10_root)]) == 0
    return storage, cifar10_root


def test_promote_trains_top_k_and_baseline_links_back_resumes_and_exports(searched, tmp_path, trainings, capsys):
    storage, root = searched
    proxy = optuna.load_study(study_name="tiny", storage=storage)
    base_hash = nas.preset_config("resnet20", width_multiplier=0.25).structure_hash()
    args = ["promote", "--study", "tiny", "--storage", storage, "--top", "2", "--seeds", "2", "--data", str(root),
            *TINY]
    capsys.readouterr()
    trainings.reset(interrupt_at=4)
    assert main(args) == 130
    assert "resume with: python search.py promote --study tiny" in capsys.readouterr().err
    promoted = optuna.load_study(study_name="tiny:promoted", storage=storage)
    assert [t.state for t in promoted.trials] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL]

    trainings.reset()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert trainings.started == 3  # 3 architectures x 2 seeds, less the 3 stored
    promoted = optuna.load_study(study_name="tiny:promoted", storage=storage)
    runs = [t for t in promoted.trials if t.state == TrialState.COMPLETE and t.user_attrs["kind"] == "evaluation"]
    summaries = [t for t in promoted.trials if t.user_attrs.get("kind") == "promoted"]
    assert len(runs) == 6 and len(summaries) == 3
    hashes = {t.user_attrs["structure_hash"] for t in summaries}
    assert base_hash in hashes
    # the top 2 by proxy accuracy, besides the baseline
    ranked = sorted((t for t in proxy.trials if t.state == TrialState.COMPLETE
                     and t.user_attrs["structure_hash"] != base_hash), key=lambda t: (-t.values[0], t.values[1]))
    top = []
    for t in ranked:
        if t.user_attrs["structure_hash"] not in top:
            top.append(t.user_attrs["structure_hash"])
    assert hashes == {base_hash, *top[:2]}
    for t in runs:  # each training links back to its proxy trial
        a = t.user_attrs
        assert a["proxy_study"] == "tiny" and a["seed"] in (2000, 2001)  # no proxy training's seeds
        proxy_trial = proxy.trials[a["proxy_trial"]]
        assert proxy_trial.user_attrs["structure_hash"] == a["structure_hash"]
        assert a["proxy_accuracy"] == proxy_trial.values[0]
        assert a["train_images"] == 200
    for s in summaries:  # the summary is the mean of its architecture's seeds
        mine = [t for t in runs if t.user_attrs["structure_hash"] == s.user_attrs["structure_hash"]]
        assert sorted(t.user_attrs["seed"] for t in mine) == [2000, 2001]
        assert s.values[0] == pytest.approx(sum(t.values[0] for t in mine) / 2)
        assert sorted(s.user_attrs["seed_accuracies"]) == sorted(t.values[0] for t in mine)
        assert s.user_attrs.get("baseline", False) == (s.user_attrs["structure_hash"] == base_hash)
        assert s.values[1] == s.user_attrs["macs"]
    from optuna_dashboard import get_note

    note = get_note(promoted)  # the dashboard's note says what the study is
    assert "**Promoted** from study `tiny`" in note and "### Pareto front" in note and "model-HASH-seedS.pt" in note
    for line in ("Kendall tau proxy vs promoted accuracy over 3 architectures", "P(Δ>0)",
                 "the proxy's most accurate", "of 2 design(s) counts at P >= 0.950"):
        assert line in out, line
    # exactly one verdict, and the one the decision function gives on the stored seeds
    from nas.training.noise import gain, pooled_noise
    from nas.workflows.promote import BEATS, NO_BEAT

    assert sum(line.startswith("VERDICT:") for line in out.splitlines()) == 1
    by_seed = [dict(zip(x.user_attrs["seeds"], x.user_attrs["seed_accuracies"])) for x in summaries]
    best = max((x for x in summaries if not x.user_attrs.get("baseline")), key=lambda x: x.values[0])
    base = next(x for x in summaries if x.user_attrs.get("baseline"))
    g = gain(best.user_attrs["seed_accuracies"], base.user_attrs["seed_accuracies"], pooled_noise(by_seed),
             higher_seeds=best.user_attrs["seeds"], lower_seeds=base.user_attrs["seeds"])
    verdict = next(line for line in out.splitlines() if line.startswith("VERDICT:"))
    assert verdict.startswith(BEATS if g.probability >= 0.95 else NO_BEAT), (verdict, g)
    assert f"P = {g.probability:.3f}" in verdict
    if verdict.startswith(NO_BEAT):  # within noise: what would resolve it, at the verdict's level
        assert "seeds per arm" in out and "0.5 points" in out
    assert "test acc" not in out

    # report and export read the promoted study like any other
    assert main(["report", "--study", "tiny:promoted", "--storage", storage]) == 0
    assert "hypervolume" in capsys.readouterr().out
    exported = tmp_path / "best.yaml"
    assert main(["export", "--study", "tiny:promoted", "--storage", storage, "--pick", "knee", "-o",
                 str(exported)]) == 0
    cfg = nas.load_config(exported)
    knee = pick_trial(promoted, "knee")
    assert cfg.structure_hash() == knee.user_attrs["structure_hash"] and knee.user_attrs["kind"] == "promoted"
    assert nas.profile(nas.build_model(cfg), 32)["params"] == knee.user_attrs["params"]

    # --test: test accuracy beside validation for the promoted front only; nothing trained, nothing stored
    trainings.reset()
    n_trials = len(promoted.trials)
    assert main([*args, "--test"]) == 0
    out = capsys.readouterr().out
    assert trainings.started == 0 and "test acc" in out
    promoted = optuna.load_study(study_name="tiny:promoted", storage=storage)
    assert len(promoted.trials) == n_trials and pick_trial(promoted, "knee").number == knee.number
    import re

    rows = [line for line in out.splitlines() if line.startswith(("* ", "  ")) and "M " in line]
    assert len(rows) == 3
    for line in rows:  # the test column, just before the attention column: a value on the front only
        on_front = line.startswith("* ")
        assert bool(re.search(r"\s0\.\d{4}(\s+0\.\d{4})?\s+s3=", line)) == on_front, line
        assert bool(re.search(r"\s-\s+s3=", line)) == (not on_front), line


def test_promote_more_seeds_supersedes_the_summary_and_fewer_drop_none(searched, capsys):
    storage, root = searched
    base = ["promote", "--study", "tiny", "--storage", storage, "--trials", "1,1", "--data", str(root), *TINY]
    assert main([*base, "--seeds", "1"]) == 0
    assert "promote 2 architectures" in capsys.readouterr().out  # trial 1 named twice, and the baseline
    assert main([*base, "--seeds", "2"]) == 0
    promoted = optuna.load_study(study_name="tiny:promoted", storage=storage)
    summaries = [t for t in promoted.trials if t.user_attrs.get("kind") == "promoted"]
    latest = [t for t in summaries if "supersedes" in t.user_attrs]
    assert len(summaries) == 4 and len(latest) == 2  # 2 architectures, each summarised with 1 then 2 seeds
    front = nas.search.results.pareto_front(promoted)
    assert {t.number for t in front} <= {t.number for t in latest}
    assert all(len(t.user_attrs["seed_accuracies"]) == 2 for t in front)
    assert main([*base, "--seeds", "1"]) == 0  # fewer seeds asked: the stored second seed still counts
    promoted = optuna.load_study(study_name="tiny:promoted", storage=storage)
    assert len(promoted.trials) == len([t for t in promoted.trials if t.user_attrs.get("kind") == "evaluation"]) + 4


def test_ablate_variants_differ_in_exactly_their_stage():
    cfg = nas.preset_config("resnet20", width_multiplier=0.25)
    cfg.stages[1].blocks[0].attention = nas.model.config.AttentionSpec("se", params={"r": 2})
    for b in cfg.stages[2].blocks:
        b.attention = nas.model.config.AttentionSpec("eca")
    vs = variants(cfg)
    assert [v.name for v in vs] == ["full", "without s2", "without s3", "baseline"]
    assert [v.removed for v in vs] == ["-", "s2: se", "s3: eca x3", "all attention"]
    original = cfg.to_dict()["stages"]
    for v in vs[1:3]:
        s = int(v.name[-1]) - 1
        stages = v.cfg.to_dict()["stages"]
        assert [i for i in range(3) if stages[i] != original[i]] == [s]  # only that stage changed
        assert all(b.attention.type == "none" for b in v.cfg.stages[s].blocks)
    assert vs[-1].cfg.structure_hash() == nas.preset_config("resnet20", width_multiplier=0.25).structure_hash()
    assert vs[0].cfg.structure_hash() == cfg.structure_hash()


def test_ablate_end_to_end(tmp_path, cifar10_root, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = nas.preset_config("resnet20", width_multiplier=0.25)
    for b in cfg.stages[2].blocks:
        b.attention = nas.model.config.AttentionSpec("se", params={"r": 2})
    path = tmp_path / "one.yaml"
    cfg.save(path)
    storage = f"sqlite:///{tmp_path}/nas.db"
    args = ["ablate", str(path), "--storage", storage, "--data", str(cifar10_root), "--seeds", "2", *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    for line in ("full", "without s3", "s3: se x3", "baseline", "buys acc", "costs MACs", "ms/step"):
        assert line in out, line
    study = optuna.load_study(study_name="ablate:one", storage=storage)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # "without s3" is the baseline here: 2 distinct architectures x 2 seeds
    assert len(done) == 4 and len({t.user_attrs["structure_hash"] for t in done}) == 2
    assert main(args) == 0 and "every training was stored already" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "0"], "--seeds: must be 1 to 8"),
    (["--top", "0"], "--top: must be >= 1"),
    (["--trials", "a,b"], "--trials: a comma-separated list"),
    (["--epochs", "0"], "--epochs: must be > 0"),
])
def test_bad_promote_input_is_one_line(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["promote", "--study", "x", "--storage", f"sqlite:///{tmp_path}/x.db", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "x.db").exists()


def test_promote_refusals_name_the_problem(searched, capsys):
    storage, root = searched
    cases = [
        (["--study", "nope"], "nope"),
        (["--study", "tiny", "--trials", "99"], "--trials: study 'tiny' has no trial 99"),
    ]
    for extra, message in cases:
        assert main(["promote", "--storage", storage, "--data", str(root), *extra, *TINY]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert main(["promote", "--study", "tiny", "--storage", storage, "--trials", "1", "--seeds", "1",
                 "--data", str(root), *TINY]) == 0
    capsys.readouterr()
    # the same promoted study at another budget is refused, nothing trained or written
    n_trials = len(optuna.load_study(study_name="tiny:promoted", storage=storage).trials)
    assert main(["promote", "--study", "tiny", "--storage", storage, "--trials", "1", "--seeds", "1",
                 "--data", str(root), "--epochs", "1", "--subset", "200", "--val-size", "100"]) == 2
    assert "was trained at another budget (200 images x 0.5 epochs, 100 validation images)" in \
        capsys.readouterr().err
    assert len(optuna.load_study(study_name="tiny:promoted", storage=storage).trials) == n_trials
    # --into a study of another kind (the search's own) is refused
    assert main(["promote", "--study", "tiny", "--storage", storage, "--into", "tiny", "--data", str(root), *TINY]) == 2
    assert "study 'tiny' exists and is not a promotion; choose another with --into NAME" in capsys.readouterr().err
    assert main(["promote", "--study", "tiny:promoted", "--storage", storage, "--data", str(root), *TINY]) == 2
    assert "is a promotion already" in capsys.readouterr().err


def test_ablate_refuses_a_config_without_attention(tmp_path, capsys, cifar10_root):
    path = tmp_path / "plain.yaml"
    nas.preset_config("resnet20", width_multiplier=0.25).save(path)
    assert main(["ablate", str(path), "--storage", f"sqlite:///{tmp_path}/x.db", "--data", str(cifar10_root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no attention in any stage" in err
    assert not (tmp_path / "x.db").exists()


def test_an_interrupted_evaluation_resumes_from_its_last_epoch_boundary(tmp_path, monkeypatch):
    """A long training (promote's, calibrate's reference) killed half-way
    continues from the state file evaluate keeps, not from step 0."""
    import torch

    from nas.device import resolve_runtime
    from nas.training.evaluate import TrainingData, evaluate, full_budget

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2700, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(2700) % 10
    data = TrainingData(images[:2600], labels[:2600], images[2600:], labels[2600:], (0.5,) * 3, (0.25,) * 3, 10, 32,
                        "f" * 64)
    # batch 256: an epoch is 10 full batches (the remainder dropped), the budget ceil(2 x 2600 / 256) = 21
    # steps; a state at each new epoch (steps 10 and 20); killed at step 21, it resumes at step 20
    # with a rung after the first epoch, measured before the kill
    budget = dataclasses.replace(full_budget(epochs=2), rungs=[1.0, 2.0])
    cfg = nas.preset_config("resnet20", width_multiplier=0.25)
    study = optuna.create_study(directions=["maximize", "minimize"])
    real_train = nas.training.evaluate.train

    def killed_at_the_end(*a, **k):
        def progress(step, total, loss):
            if step == total:
                raise KeyboardInterrupt
        return real_train(*a, **{**k, "progress": progress, "state_interval": 0})

    monkeypatch.setattr(nas.training.evaluate, "train", killed_at_the_end)
    runtime = resolve_runtime("cpu", "fp32")
    with pytest.raises(KeyboardInterrupt):
        evaluate(study, cfg, budget, 0, data, runtime, state_dir=tmp_path)
    assert len(list(tmp_path.glob("*.train-state.pt"))) == 1
    monkeypatch.setattr(nas.training.evaluate, "train", real_train)
    trial = evaluate(study, cfg, budget, 0, data, runtime, state_dir=tmp_path)
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["resumed_from_step"] == 20
    assert trial.user_attrs["images_trained"] == 21 * 256
    # the rung measured before the kill is stored with the one after the resume (the analysis of a
    # calibration needs every rung of every training)
    killed = next(t for t in study.trials if t.state == TrialState.FAIL)
    first_rung = killed.user_attrs["rungs"]
    assert len(first_rung) == 1 and first_rung[0][0] == pytest.approx(1.0, abs=0.1)
    rungs = trial.user_attrs["rungs"]
    assert len(rungs) == 2 and rungs[0] == first_rung[0] and rungs[1][0] == pytest.approx(2.0, abs=0.1)
    assert list(tmp_path.glob("*.train-state.pt")) == []  # removed once the result is stored


def test_difference_and_verdict_threshold_by_hand():
    from nas.training.evaluate import difference
    from nas.training.noise import SeedNoise
    from nas.workflows.promote import verdict_threshold

    # gain 0.2, se 0.1 * sqrt(1/2 + 1/2) = 0.1, t = 2 on 1 degree of freedom: F = 1/2 + atan(2) / pi = 0.8524
    # (the normal value, Phi(2) = 0.9772, treated the estimated std as known)
    delta, se, prob = difference([0.5, 0.7], [0.4, 0.4], SeedNoise(0.1, 1))
    assert delta == pytest.approx(0.2) and se == pytest.approx(0.1)
    assert prob == pytest.approx(0.5 + math.atan(2) / math.pi)
    # one seed on a side: judged with the pooled std, se = 0.1 * sqrt(1 + 1/2)
    assert difference([0.5], [0.4, 0.4], SeedNoise(0.1, 1))[1] == pytest.approx(0.1 * math.sqrt(1.5))
    assert difference([0.5, 0.6], [0.4, 0.4], SeedNoise())[1:] == (None, None)  # no seed std known
    assert verdict_threshold(1) == pytest.approx(0.9) and verdict_threshold(8) == pytest.approx(1 - 0.1 / 8)


def test_promote_a_latency_study_keeps_its_cost(tmp_path, cifar10_root, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "lat.yaml"
    space.write_text(SPACE.replace("sampler: random\n", "sampler: random\nobjectives: [accuracy, latency]\n"))
    storage = f"sqlite:///{tmp_path}/nas.db"
    assert main(["--space", str(space), "--study", "lat", "--trials", "3", "--timeout", "0", "--storage", storage,
                 "--data", str(cifar10_root)]) == 0
    assert main(["promote", "--study", "lat", "--storage", storage, "--top", "1", "--seeds", "1",
                 "--data", str(cifar10_root), *TINY]) == 0
    proxy = optuna.load_study(study_name="lat", storage=storage)
    promoted = optuna.load_study(study_name="lat:promoted", storage=storage)
    assert promoted.metric_names == ["accuracy", "latency"]
    for t in promoted.trials:  # every trial's second value is the search's ms per step, not MACs
        h = t.user_attrs["structure_hash"]
        searched = [p for p in proxy.trials if p.user_attrs.get("structure_hash") == h and "latency_ms" in p.user_attrs]
        assert t.values[1] == pytest.approx(searched[0].user_attrs["latency_ms"]), t.number


def test_ablate_of_a_promoted_design_trains_fresh_seeds_and_copies_only_other_ablations(searched, tmp_path,
                                                                                        trainings, capsys):
    """ablate never reuses the promote's trainings, the evidence that selected the design it ablates (issue
    34 item 4): it trains seeds of its own; a second ablation of the same design copies the first's (not
    selection evidence). The promote's seeds are no proxy training's and it validates on the confirmation
    images, disjoint from the search's validation images (asserted on the stored attrs)."""
    from nas.training.evaluate import (
        SEED_OFFSETS,
        budget_splits,
        full_budget,
        split_hash,
    )

    storage, root = searched
    proxy = optuna.load_study(study_name="tiny", storage=storage)
    base_hash = nas.preset_config("resnet20", width_multiplier=0.25).structure_hash()
    design = next(t for t in proxy.trials if t.state == TrialState.COMPLETE
                  and t.user_attrs["structure_hash"] != base_hash)
    promote = ["promote", "--study", "tiny", "--storage", storage, "--trials", str(design.number), "--data",
               str(root), *TINY]
    trainings.reset()
    assert main([*promote, "--seeds", "2"]) == 0
    assert trainings.started == 4
    promoted = optuna.load_study(study_name="tiny:promoted", storage=storage)
    runs = [t for t in promoted.trials if t.user_attrs.get("kind") == "evaluation"]
    proxy_seeds = {s for t in proxy.trials for s in (t.user_attrs.get("seeds") or [t.user_attrs.get("seed")])}
    assert {t.user_attrs["seed"] for t in runs} == {SEED_OFFSETS["promote"], SEED_OFFSETS["promote"] + 1}
    assert not {t.user_attrs["seed"] for t in runs} & proxy_seeds
    assert {t.user_attrs["validation"] for t in runs} == {"confirmation"}
    assert {t.user_attrs["validation"] for t in proxy.trials if "validation" in t.user_attrs} == {"search"}
    search_split = {t.user_attrs["val_split"] for t in proxy.trials if "val_split" in t.user_attrs}
    assert len(search_split) == 1 and not search_split & {t.user_attrs["val_split"] for t in runs}
    # and the two splits, drawn as the commands draw them, share no image
    from nas.training.datasets import load_dataset

    images = load_dataset("cifar10", str(root))
    budget = full_budget("cifar10", 0.5, 200, 100)  # TINY's budget
    splits = budget_splits(images.train_labels, budget.val_size, budget.subset)
    assert split_hash(splits.confirm) in {t.user_attrs["val_split"] for t in runs}
    assert not set(splits.confirm.tolist()) & set(splits.val.tolist())
    assert not set(splits.train.tolist()) & (set(splits.confirm.tolist()) | set(splits.val.tolist()))

    path = tmp_path / "design.yaml"
    assert main(["export", "--study", "tiny", "--storage", storage, "--trial", str(design.number), "-o",
                 str(path)]) == 0
    capsys.readouterr()

    ablate = ["ablate", str(path), "--storage", storage, "--data", str(root), *TINY]
    trainings.reset()
    assert main([*ablate, "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert trainings.started == 4  # the full design and the baseline ("without s3" is the baseline here), fresh
    assert "tiny:promoted" not in out and "copied" not in out
    ablation = optuna.load_study(study_name="ablate:design", storage=storage)
    assert {t.user_attrs["seed"] for t in ablation.trials} == {SEED_OFFSETS["ablate"], SEED_OFFSETS["ablate"] + 1}

    # another ablation of the same design copies the first one's trainings; a copy of a copy names the original
    trainings.reset()
    assert main([*ablate, "--seeds", "1", "--study", "again"]) == 0
    assert trainings.started == 0
    again = optuna.load_study(study_name="again", storage=storage)
    assert {t.user_attrs["copied_from"]["study"] for t in again.trials} == {"ablate:design"}
    for t in again.trials:
        source = ablation.trials[t.user_attrs["copied_from"]["trial"]]
        for key in ("structure_hash", "budget_key", "seed", "precision", "device"):
            assert t.user_attrs[key] == source.user_attrs[key]
    capsys.readouterr()

    # another precision is another experiment: trained, not copied
    trainings.reset()
    bf16 = [a if a != "fp32" else "bf16" for a in ablate]
    assert main([*bf16, "--seeds", "1", "--study", "in-bf16"]) == 0
    assert trainings.started == 2 and "copied" not in capsys.readouterr().out
    assert {t.user_attrs["precision"] for t in optuna.load_study(study_name="in-bf16", storage=storage).trials} == {
        "bf16"}

    # a third seed: the ablation trains it for both; a promote then trains its own (no checkpoint to copy)
    trainings.reset()
    assert main([*ablate, "--seeds", "3"]) == 0
    assert trainings.started == 2
    trainings.reset()
    assert main([*promote, "--seeds", "3", "--test"]) == 0
    assert trainings.started == 2 and "test acc" in capsys.readouterr().out
