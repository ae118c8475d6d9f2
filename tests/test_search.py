"""The search end to end through the real CLI (tiny budgets), and the study
machinery: duplicates, constraints, halving inside a study, report, export,
resume and the dashboard."""
import json
import subprocess
import sys
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna_dashboard import get_note

import nas
from nas.kernels.plan import PLAN_ATTR, machine_kind
from nas.report import note as dashboard
from nas.report.export import pick_trial
from nas.report.report import hypervolume
from nas.storage import artifacts as stored

REPO = Path(__file__).resolve().parents[1]
TINY = ["--subset", "200", "--val-size", "200", "--epochs", "1", "--timeout", "0"]


def cli(*args, cwd):
    out = subprocess.run([sys.executable, str(REPO / "search.py"), *map(str, args)], capture_output=True, text=True,
                         cwd=cwd)
    return out


def _study(storage, name):
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.parametrize("space", ["sk", "mixed"])
def test_search_report_export_rebuild_resume(space, tmp_path, cifar10_root):
    storage = f"sqlite:///{tmp_path}/nas.db"
    out = cli("--space", space, "--trials", 3, "--storage", storage, "--data", cifar10_root, *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Pareto front of study" in out.stdout
    assert out.stdout.count("trial ") >= 3
    assert "img/s" not in out.stdout and "\r" not in out.stdout  # not a terminal: no status line
    study = _study(storage, space)
    assert len(study.trials) == 3
    assert study.metric_names == ["accuracy", "macs"]
    assert study.user_attrs["space_name"] == space and "space_yaml" in study.user_attrs
    assert len(study.user_attrs["data_fingerprint"]) == 64
    assert set(study.user_attrs["versions"]) >= {"torch", "optuna", "nas"}
    for t in study.trials:  # written before training, so every trial has them
        for key in ("macs", "params", "elementwise", "structure_hash", "config", "fidelity", "seed"):
            assert key in t.user_attrs, (t.number, key)
    # trial 0 is the space's attention-free architecture, enqueued, trained to its budget
    baseline = study.trials[0]
    assert baseline.user_attrs["baseline"] is True and set(baseline.params.values()) == {"none"}
    assert baseline.params == {f"s{s}.type": "none" for s in (1, 2, 3)}
    assert baseline.user_attrs["structure_hash"] == nas.preset_config("resnet20").structure_hash()
    assert "Δ, P(Δ>0): against the attention-free baseline, trial 0" in out.stdout
    # every trained trial records its numerics (the kernel choices it ran with); new choices join the study's plan
    trained = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL and "not_trained" not in t.user_attrs
               and "duplicate_of" not in t.user_attrs]
    plan = study.user_attrs.get(PLAN_ATTR)
    for t in trained:
        mine = t.user_attrs[PLAN_ATTR]
        assert mine["machine"] == machine_kind() and "precision" in t.user_attrs
        assert all(plan["choices"][k] == v for k, v in mine["choices"].items())
    if any(t.user_attrs[PLAN_ATTR]["choices"] for t in trained):
        assert plan["machine"] == machine_kind() and plan["choices"]
    # optuna-dashboard: the study's note, and each completed trial's exported config as its artifact
    note = get_note(study)
    assert note.startswith(dashboard.NOTE_HEADER) and "**Baseline** (no attention): trial 0," in note
    assert "### Pareto front" in note and "### The knee" in note
    artifacts = tmp_path / "nas-artifacts"  # beside the storage file
    for t in study.trials:
        attached = stored.trial_artifacts(study, t)
        if t.state != optuna.trial.TrialState.COMPLETE:
            assert attached == {}
            continue
        assert list(attached) == [f"trial-{t.number}.yaml"]
        exported = nas.load_config(artifacts / attached[f"trial-{t.number}.yaml"])
        assert exported.structure_hash() == t.user_attrs["structure_hash"]
        assert exported.meta["metrics"]["val_accuracy"] == t.values[0] and exported.meta["provenance"]["trial"] == t.number

    report = cli("report", "--study", space, "--storage", storage, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "hypervolume" in report.stdout and "reference point" in report.stdout
    assert f"baseline (no attention): trial 0, accuracy {baseline.values[0]:.4f}" in report.stdout
    assert "delta_accuracy" in report.stdout and "delta_macs" in report.stdout
    import pandas as pd

    front = pd.read_csv(tmp_path / "studies" / space / "pareto.csv")
    for row in front.itertuples():  # each front point against the baseline
        assert row.delta_accuracy == pytest.approx(row.val_accuracy - baseline.values[0])
        assert row.delta_macs == row.macs - baseline.user_attrs["macs"]
    for name in ("trials.csv", "pareto.csv", "pareto.png"):
        assert (tmp_path / "studies" / space / name).stat().st_size > 0
    assert "optuna-dashboard: study note refreshed" in report.stdout
    assert sorted(stored.study_artifacts(study)) == ["pareto.png", "trials.csv"]
    assert get_note(study).count(dashboard.NOTE_HEADER) == 1

    exported = tmp_path / "best.yaml"
    exp = cli("export", "--study", space, "--storage", storage, "--pick", "knee", "-o", exported, cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr
    cfg = nas.load_config(exported)
    trial = study.trials[cfg.meta["provenance"]["trial"]]
    cost = nas.profile(nas.build_model(cfg), 32)
    assert cost["params"] == trial.user_attrs["params"] and cost["macs"] == trial.user_attrs["macs"]
    assert cfg.structure_hash() == trial.user_attrs["structure_hash"]
    assert cfg.meta["provenance"]["data_fingerprint"] == study.user_attrs["data_fingerprint"]
    assert cfg.meta["metrics"]["val_accuracy"] == trial.values[0]

    again = cli("--space", space, "--trials", 2, "--storage", storage, "--data", cifar10_root, *TINY, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    study = _study(storage, space)
    assert len(study.trials) == 5 and [t.number for t in study.trials] == list(range(5))
    assert len(study.user_attrs["commands"]) == 2
    assert [t.number for t in study.trials if t.user_attrs.get("baseline")] == [0]  # not enqueued again on resume


def _custom_space(tmp_path, body: str) -> Path:
    path = tmp_path / "custom.yaml"
    path.write_text("backbone: resnet20\nwidth_multiplier: 0.5\n" + body)
    return path


def test_same_architecture_is_not_trained_twice(tmp_path, cifar10_root):
    # one architecture only: SE with every parameter fixed, in every stage
    space = _custom_space(tmp_path, "types: [se]\nparams: {se: {r: 4}}\nsampler: random\n")
    storage = f"sqlite:///{tmp_path}/nas.db"
    out = cli("--space", space, "--trials", 2, "--storage", storage, "--data", cifar10_root, *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    first, second = _study(storage, "custom").trials
    assert "duplicate_of" not in first.user_attrs and first.user_attrs["train_seconds"] > 0
    assert second.user_attrs["duplicate_of"] == 0
    assert second.values == first.values
    assert "same as trial 0" in out.stdout


def test_configs_over_the_ceiling_are_never_trained(tmp_path, cifar10_root):
    # two architectures: stage 3 without attention (under the ceiling) or with
    # an SK conv (G=1, M=3: far over it)
    base = nas.profile(nas.build_model(nas.preset_config("resnet20", width_multiplier=0.5)), 32)["macs"]
    ceiling = base + 1000
    space = _custom_space(tmp_path, "stages: [3]\ntypes: [none, sk]\nparams: {sk: {M: 3, G: 1, r: 4}}\n"
                                    f"constraints: {{max_macs: {ceiling}}}\nsampler: random\n")
    storage = f"sqlite:///{tmp_path}/nas.db"
    out = cli("--space", space, "--trials", 6, "--storage", storage, "--data", cifar10_root, *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    trials = _study(storage, "custom").trials
    over = [t for t in trials if t.user_attrs["macs"] > ceiling]
    under = [t for t in trials if t.user_attrs["macs"] <= ceiling]
    assert over and under
    for t in over:
        assert "not_trained" in t.user_attrs and "train_seconds" not in t.user_attrs
        assert t.user_attrs["constraints"][0] > 0 and t.params["s3.type"] == "sk"
    for t in under:
        assert "not_trained" not in t.user_attrs and t.user_attrs["constraints"][0] <= 0
    assert "INFEASIBLE" in out.stdout


def test_halving_prunes_inside_a_study(tmp_path, cifar10_root):
    space = _custom_space(tmp_path, "types: [none, se, eca]\nparams: {se: {r: [2, 4, 8]}}\nsampler: random\n"
                                    "fidelity: {rungs: [0.5, 1], eta: 2}\n")
    storage = f"sqlite:///{tmp_path}/nas.db"
    # eta 2: nobody is judged before 4 other (non-baseline) trials reached the rung
    out = cli("--space", space, "--trials", 10, "--storage", storage, "--data", cifar10_root,
              "--subset", "200", "--val-size", "200", "--timeout", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    trials = _study(storage, "custom").trials
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED and "duplicate_of" not in t.user_attrs]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert pruned, "with eta 2, some trial must stop at the first rung"
    for t in pruned:
        assert len(t.user_attrs["rungs"]) == 1 and t.user_attrs["pruned_at_epochs"] == t.user_attrs["rungs"][0][0]
    for t in complete:
        assert len(t.user_attrs["rungs"]) == 2
    # the baseline (trial 0) is never stopped by halving: every report's reference
    assert trials[0].user_attrs["baseline"] and trials[0].state == optuna.trial.TrialState.COMPLETE
    assert len(trials[0].user_attrs["rungs"]) == 2
    # a pruned trial was, when it stopped, outside the best half of its peers at the rung: the
    # earlier trials that reached it, without the baseline and copies, at least the minimum of them
    for t in pruned:
        earlier = [u for u in trials if u.number < t.number and u.user_attrs.get("rungs")
                   and "duplicate_of" not in u.user_attrs and not u.user_attrs.get("baseline")]
        assert len(earlier) >= nas.search.halving.minimum_peers(2)
        points = [(u.user_attrs["rungs"][0][1], u.user_attrs["macs"]) for u in earlier]
        assert not nas.search.halving.continues((t.user_attrs["rungs"][0][1], t.user_attrs["macs"]), points, 2)


def test_hypervolume_of_hand_made_fronts():
    ref = (0.0, 10e6)
    assert hypervolume([], ref) == 0
    assert hypervolume([(0.5, 4e6)], ref) == pytest.approx(0.5 * 6)
    # two steps: 0.5 over 8 MMACs of room, then 0.3 more over 4
    assert hypervolume([(0.5, 2e6), (0.8, 6e6)], ref) == pytest.approx(0.5 * 8 + 0.3 * 4)
    # a dominated point and one beyond the reference add nothing
    assert hypervolume([(0.5, 2e6), (0.8, 6e6), (0.4, 7e6), (0.9, 12e6)], ref) == pytest.approx(0.5 * 8 + 0.3 * 4)


def _fake_study(points):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, (acc, macs) in enumerate(points):
        cfg = nas.preset_config("resnet20")
        study.add_trial(optuna.trial.create_trial(
            values=[acc, macs], user_attrs={"macs": macs, "params": 1000 + i, "structure_hash": f"h{i}",
                                            "config": cfg.to_yaml()}))
    return study


def test_export_picks():
    # front: (0.60, 10M), (0.80, 20M), (0.82, 40M); (0.5, 30M) is dominated
    study = _fake_study([(0.60, 10e6), (0.80, 20e6), (0.50, 30e6), (0.82, 40e6)])
    assert pick_trial(study, "accuracy").number == 3
    assert pick_trial(study, "smallest").number == 0
    assert pick_trial(study, "knee").number == 1  # most of the accuracy at half the MACs
    assert pick_trial(study, "accuracy", max_macs=25e6).number == 1
    assert pick_trial(study, trial_number=2).number == 2
    with pytest.raises(nas.NasError, match="--max-macs"):
        pick_trial(study, "knee", max_macs=1e6)


def test_spaces_command_lists_every_space(tmp_path):
    out = cli("spaces", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == nas.search.space.space_names()


def test_unknown_space_and_study_are_one_line_errors(tmp_path):
    out = cli("--space", "nope", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown space 'nope'; available: bam" in out.stderr
    out = cli("report", "--study", "nope", "--storage", f"sqlite:///{tmp_path}/x.db", cwd=tmp_path)
    assert out.returncode == 2 and "no study 'nope'" in out.stderr


def test_dashboard_serves_the_study_with_user_attrs(tmp_path):
    from optuna_dashboard import wsgi

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/nas.db")
    study = optuna.create_study(study_name="dash", storage=storage, directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "macs"])
    study.set_user_attr("space_name", "sk")
    study.add_trial(optuna.trial.create_trial(values=[0.7, 4e7], user_attrs={"macs": 40_000_000,
                                                                             "structure_hash": "abc123"}))
    app = wsgi(storage)

    def get(path):
        status = {}
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1"}
        setup_testing_defaults(environ)
        body = b"".join(app(environ, lambda s, h, *exc: status.setdefault("s", s)))
        assert status["s"].startswith("200"), (path, status)
        return json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["dash"]
    detail = get(f"/api/studies/{studies[0]['study_id']}")
    assert detail["objective_names"] == ["accuracy", "macs"]
    assert {"key": "space_name", "value": "sk"} in detail["user_attrs"]
    trial = detail["trials"][0]
    assert {"key": "structure_hash", "value": "abc123"} in trial["user_attrs"]
    assert trial["values"] == [0.7, 4e7]


def test_a_space_searched_in_latency(tmp_path, cifar10_root):
    """objectives: [accuracy, latency]: the front's cost is ms per training
    step, measured once per architecture and reused for a repeat of it."""
    space = _custom_space(tmp_path, "stages: [3]\ntypes: [none, se]\nparams: {se: {r: 4}}\nsampler: random\n"
                                    "objectives: [accuracy, latency]\n")
    storage = f"sqlite:///{tmp_path}/nas.db"
    out = cli("--space", space, "--trials", 3, "--storage", storage, "--data", cifar10_root, *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    study = _study(storage, "custom")
    assert study.metric_names == ["accuracy", "latency"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # three trials of two architectures: one of them at least twice
    assert len(done) == 3 and len({t.user_attrs["structure_hash"] for t in done}) <= 2
    for t in done:
        assert t.values[1] == t.user_attrs["latency_ms"] > 0
    by_structure = {}
    for t in done:  # a repeat of an architecture reuses its latency, it is not measured again
        by_structure.setdefault(t.user_attrs["structure_hash"], set()).add(t.user_attrs["latency_ms"])
    assert all(len(v) == 1 for v in by_structure.values())
    assert "ms/step" in out.stdout

    report = cli("report", "--study", "custom", "--storage", storage, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "ms per training step" in report.stdout and "latency_ms" in report.stdout
    front = __import__("pandas").read_csv(tmp_path / "studies" / "custom" / "pareto.csv")
    assert (front.cost == front.latency_ms).all()


def test_the_example_latency_space_loads():
    space = nas.search.space.load_space(REPO / "search_spaces" / "examples" / "sk-latency.yaml")
    assert space.objectives == ["accuracy", "latency", "macs"]


def test_baseline_params_build_the_attention_free_backbone(tmp_path):
    from optuna.trial import FixedTrial

    from nas.search.space import load_space, parse_space

    plain = nas.preset_config("resnet20").structure_hash()
    for name in ("sk", "mixed", "bam", "emsa"):
        space = load_space(name)
        trial = FixedTrial(space.baseline_params())
        assert space.sample(trial).structure_hash() == plain, name
        assert set(trial.params) == set(space.baseline_params())  # nothing else is asked for
    blocks = parse_space("backbone: resnet20\nplacement: block\nstages: [2]\ntypes: [none, se]\n")
    assert blocks.baseline_params() == {f"s2.b{b}.type": "none" for b in range(3)}
    assert blocks.sample(FixedTrial(blocks.baseline_params())).structure_hash() == plain
    # a space with a stage that has no "none" has no attention-free architecture
    assert parse_space("backbone: resnet20\ntypes: [se]\n").baseline_params() is None


def test_a_terminal_gets_a_live_status_line_per_trial(tmp_path, cifar10_root):
    import os
    import pty

    # 200 images in batches of 16: 12.5 steps an epoch, rungs at 1 and 2 epochs; the trainer reports every 10 steps
    space = _custom_space(tmp_path, "stages: [3]\ntypes: [none]\nfidelity: {rungs: [1, 2], batch_size: 16}\n")
    master, child = pty.openpty()
    args = ["--space", space, "--trials", 1, "--storage", f"sqlite:///{tmp_path}/nas.db", "--data", cifar10_root,
            "--subset", 200, "--val-size", 200, "--timeout", 0]
    proc = subprocess.Popen([sys.executable, str(REPO / "search.py"), *map(str, args)], stdout=child, stderr=child,
                            cwd=tmp_path)
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=300) == 0, output.decode(errors="replace")[-2000:]
    text = output.decode(errors="replace")
    assert "trial 0 rung 1/2 epoch 0.80/2" in text and "trial 0 rung 2/2 epoch 1.60/2" in text
    assert "img/s" in text and "ETA" in text
    # the status line is cleared; the finished trial's own line and the front follow as without a terminal
    assert "trial    0 COMPLETE" in text and "Pareto front of study" in text


def test_baseline_survives_interruption_and_retries_and_is_found_in_old_studies(tmp_path):
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from nas.search.objective import enqueue_baseline
    from nas.search.results import BASELINE_ATTR, baseline_trial
    from nas.search.space import load_space
    from nas.storage.liveness import _enqueue_retry

    space = load_space("se")
    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path}/b.db")
    enqueue_baseline(study, space)
    enqueue_baseline(study, space)  # once
    assert len(study.trials) == 1 and study.user_attrs[BASELINE_ATTR] == space.baseline_params()
    first = study.ask()
    assert first.user_attrs["baseline"] and first.params == {}  # params are suggested later, by the objective
    study.tell(first, state=TrialState.FAIL)  # Ctrl-C during the baseline's training
    enqueue_baseline(study, space)  # the resume queues it again...
    enqueue_baseline(study, space)  # ...once
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["baseline"]
    # a dead worker's retry keeps the mark (storage._enqueue_retry)
    dead = optuna.trial.create_trial(params={"s1.type": "none"}, distributions={"s1.type": CategoricalDistribution(
        ["none", "se"])}, state=TrialState.FAIL, user_attrs={"baseline": True})
    _enqueue_retry(study, dead, "worker died")
    assert study.get_trials(states=(TrialState.WAITING,))[-1].user_attrs["baseline"] is True
    # a study from before: its attention-free trial is found from its stored config (here 100 classes)
    old = optuna.create_study(directions=["maximize", "minimize"])
    for attention, accuracy in (("se", 0.4), ("none", 0.3)):
        cfg = nas.preset_config("resnet20", num_classes=100)
        if attention != "none":
            cfg.stages[2].blocks[0].attention = nas.AttentionSpec("se")
        old.add_trial(optuna.trial.create_trial(values=[accuracy, 1.0], user_attrs={"config": cfg.to_yaml()}))
    assert baseline_trial(old).values[0] == 0.3
