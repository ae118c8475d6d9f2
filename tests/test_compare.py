"""`search.py compare`: several studies' fronts in one table and plot, one
reference point, the merged front, and a refusal for different fidelities."""
import pandas as pd
import pytest
from test_search import TINY, _study, cli

from nas.report.compare import _merged_front
from nas.report.report import front_frame
from nas.search.results import study_seed_std


def _space(tmp_path, name, types):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"backbone: resnet20\nwidth_multiplier: 0.5\nstages: [3]\ntypes: {types}\nsampler: random\n")
    return path


def test_merged_front_keeps_the_non_dominated_points():
    # (accuracy, cost): the second dominates the third; equal points both stay
    points = [(0.5, 10.0), (0.7, 20.0), (0.6, 25.0), (0.8, 40.0), (0.8, 40.0)]
    assert _merged_front(points) == [True, True, False, True, True]


def test_compare_two_studies_of_different_spaces(tmp_path, cifar10_root):
    storage = f"sqlite:///{tmp_path}/nas.db"
    for name, types in (("withse", "[none, se]"), ("witheca", "[none, eca]")):
        out = cli("--space", _space(tmp_path, name, types), "--study", name, "--trials", 2, "--storage", storage,
                  "--data", cifar10_root, *TINY, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    out = cli("compare", "--study", "withse", "--study", "witheca", "--storage", storage, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "studies" / "compare-withse-witheca" / "compare.csv")
    assert (tmp_path / "studies" / "compare-withse-witheca" / "compare.png").stat().st_size > 0
    assert set(table.study) == {"withse", "witheca"}
    for name in ("withse", "witheca"):  # every study's front is in the table, as report computes it
        study = _study(storage, name)
        front = front_frame(study, study_seed_std(study))
        assert sorted(table[table.study == name].trial) == sorted(front.trial)
    # the merged front: exactly the rows no other row (of either study) dominates
    points = list(zip(table.val_accuracy, table.cost))
    for (acc, cost), merged in zip(points, table.merged_front):
        dominated = any(a >= acc and c <= cost and (a > acc or c < cost) for a, c in points)
        assert merged == (not dominated)
    assert table.merged_front.any()
    # one reference point for both hypervolumes, printed once
    assert out.stdout.count("hypervolume against one reference point") == 1
    assert "  withse: " in out.stdout and "  witheca: " in out.stdout and "merged front (*)" in out.stdout
    baselines = {name: _study(storage, name).trials[0] for name in ("withse", "witheca")}
    for row in table.itertuples():  # each study's delta is against its own baseline
        assert row.delta_accuracy == pytest.approx(row.val_accuracy - baselines[row.study].values[0])


def _stored_study(storage, name, subset, accuracy):
    """A study as search.py leaves it (space, fidelity, one trained trial),
    written directly: the refusal is about the studies' records, not training."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    import nas

    space = "backbone: resnet20\nwidth_multiplier: 0.5\nstages: [3]\ntypes: [none, se]\n"
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "macs"])
    study.set_user_attr("space_yaml", space)
    fidelity = {"dataset": "cifar10", "subset": subset, "val_size": 200, "rungs": [1.0], "eta": 3, "batch_size": 128}
    study.set_user_attr("fidelity", fidelity)
    study.set_user_attr("data_fingerprint", "same data")
    cfg = nas.preset_config("resnet20", width_multiplier=0.5)
    cost = nas.profile(nas.build_model(cfg), 32)
    study.add_trial(optuna.trial.create_trial(
        params={"s3.type": "none"}, distributions={"s3.type": CategoricalDistribution(["none", "se"])},
        values=[accuracy, cost["macs"]],
        user_attrs={"macs": cost["macs"], "params": cost["params"], "structure_hash": cfg.structure_hash(),
                    "seed_accuracies": [accuracy], "baseline": True, "fidelity": fidelity}))


def test_compare_refuses_different_fidelities_unless_allowed(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/nas.db"
    _stored_study(storage, "small", 200, 0.3)
    _stored_study(storage, "smaller", 100, 0.2)
    refused = cli("compare", "--study", "small", "--study", "smaller", "--storage", storage, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "different fidelities (subset: 200 (small) vs 100 (smaller))" in refused.stderr
    assert "--allow-different-fidelity" in refused.stderr
    assert not (tmp_path / "studies" / "compare-small-smaller").exists()  # nothing written
    allowed = cli("compare", "--study", "small", "--study", "smaller", "--storage", storage,
                  "--allow-different-fidelity", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("warning: different fidelities (subset: 200 (small) vs 100 (smaller))")
    table = pd.read_csv(tmp_path / "studies" / "compare-small-smaller" / "compare.csv")
    assert list(table.merged_front) == [True, False]  # same MACs: the more accurate one dominates
    from nas.cli import main

    assert main(["compare", "--study", "small", "--storage", storage]) == 2
    assert "compare needs at least two studies, got 1" in capsys.readouterr().err
