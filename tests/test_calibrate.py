"""calibrate (issue 14 item 2): the statistics against hand-computed cases,
the recommendation, the space-file update, the sample, and the command end
to end on a tiny budget, interrupted and resumed."""
from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import nas
import nas.training.evaluate
from nas.cli import main
from nas.search.space import load_space, parse_space
from nas.training.budget import Fidelity
from nas.workflows.calibrate import (
    INTERVAL,
    Row,
    choose_target,
    draw_sample,
    make_row,
    rank_agreement,
    recommend,
    seeds_intervals,
    seeds_taus,
    self_agreement,
    tau_ceiling,
    tau_interval,
    write_fidelity,
)


def test_kendall_and_spearman_of_hand_computed_rankings():
    # one discordant pair of six: tau (5 - 1) / 6; rank differences 0, 1, -1, 0: rho 1 - 6 * 2 / (4 * 15)
    tau, rho = rank_agreement([1, 2, 3, 4], [1, 3, 2, 4])
    assert tau == pytest.approx(4 / 6) and rho == pytest.approx(0.8)
    # a tie in the prediction: 5 concordant, 0 discordant, 1 tied pair: tau-b 5 / sqrt(5 * 6)
    tau, rho = rank_agreement([1, 1, 2, 3], [1, 2, 3, 4])
    assert tau == pytest.approx(5 / math.sqrt(30))
    # ranks 1.5, 1.5, 3, 4 against 1, 2, 3, 4: rho is their Pearson correlation
    assert rho == pytest.approx(np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1])
    assert rank_agreement([4, 3, 2, 1], [1, 2, 3, 4]) == (pytest.approx(-1.0), pytest.approx(-1.0))


def test_taus_over_seeds_average_every_choice_of_seeds():
    reference = [1.0, 2.0, 3.0]
    # seed 0 ranks perfectly (tau 1), seed 1 swaps the first two (tau (2 - 1) / 3);
    # their mean, 0.175, 0.2, 0.35, ranks perfectly
    per_seed = np.array([[0.1, 0.25], [0.2, 0.2], [0.3, 0.4]])
    one, two = seeds_taus(per_seed, reference)
    assert one == pytest.approx((1.0 + 1 / 3) / 2)
    assert two == pytest.approx(1.0)


def test_tau_interval_brackets_the_estimate():
    predicted, reference = [0.1, 0.3, 0.2, 0.5, 0.4, 0.6, 0.8, 0.7], [1, 2, 3, 4, 5, 6, 7, 8]
    tau, _ = rank_agreement(predicted, reference)
    lo, hi = tau_interval(predicted, reference)
    assert -1 <= lo <= tau <= hi <= 1 and hi - lo > 0.05
    # architectures are resampled in pairs: a perfect ranking stays perfect in every resample
    assert tau_interval(reference, reference) == (1.0, 1.0)
    assert tau_interval(reference[::-1], reference) == (-1.0, -1.0)


def _row(name, images, taus, kind="budget", lows=None):
    """A row whose interval of each tau reaches down to ``lows`` (default:
    the tau itself, so that the point estimate and the lower end agree)."""
    intervals = [(lo, 1.0) for lo in (taus if lows is None else lows)]
    return Row(name, kind, images, 0.01, taus, intervals[-1], 0.5, True, Fidelity() if kind == "budget" else None,
               intervals)


def test_recommendation_is_the_cheapest_fidelity_that_reaches_the_target():
    cheap, dear = _row("10k x 3 ep", 30_000, [0.72]), _row("20k x 6 ep", 120_000, [0.90])
    assert recommend([dear, cheap], 0.7) == (cheap, 1)
    assert recommend([dear, cheap], 0.8) == (dear, 1)
    assert recommend([dear, cheap], 0.95) is None
    # two seeds of the cheap one (60,000 images) beat one seed of the dear one
    cheap2 = _row("10k x 3 ep", 30_000, [0.6, 0.8])
    assert recommend([dear, cheap2], 0.75) == (cheap2, 2)
    # a rung inside a longer schedule is not a budget of its own
    assert recommend([_row("10k x 1 ep (rung of 3)", 10_000, [0.9], kind="rung"), dear], 0.8) == (dear, 1)


def test_a_point_tau_over_the_target_is_not_a_recommendation():
    """The rule: a (fidelity, repeats) counts only if the lower end of its
    tau interval reaches the target; a point estimate over the target whose
    interval reaches below it does not."""
    lucky = _row("10k x 3 ep", 30_000, [0.75], lows=[0.45])  # tau over 0.7, lower end under it
    shown = _row("20k x 3 ep", 60_000, [0.74], lows=[0.71])  # a lower tau, but shown to reach 0.7
    assert recommend([lucky], 0.7) is None
    assert recommend([lucky, shown], 0.7) == (shown, 1)
    # per repeats: one seed's interval reaches below, two seeds' does not
    two = _row("10k x 3 ep", 30_000, [0.72, 0.8], lows=[0.5, 0.7])
    assert recommend([two, shown], 0.7) == (shown, 1)  # 60,000 images either way: the higher lower end
    assert recommend([two], 0.7) == (two, 2)
    assert recommend([two], 0.71) is None
    assert recommend([shown], None) is None  # no target: nothing


def _per_seed(*columns):
    return np.array(columns, float).T


def test_each_repeats_tau_has_the_bootstrap_interval_of_its_statistic():
    from scipy import stats

    reference = [0.7175, 0.72, 0.7225, 0.725, 0.74, 0.75, 0.76, 0.77]
    per_seed = _per_seed([0.52, 0.50, 0.51, 0.54, 0.53, 0.57, 0.55, 0.56], [0.50, 0.52, 0.51, 0.53, 0.54, 0.55, 0.57, 0.56])
    one, two = seeds_intervals(per_seed, reference)
    # k = 1: the mean of the two seeds' taus, bootstrapped with the draws of scipy's paired bootstrap
    def statistic(a, b, r):
        return (stats.kendalltau(a, r).statistic + stats.kendalltau(b, r).statistic) / 2

    draws = stats.bootstrap((per_seed[:, 0], per_seed[:, 1], np.array(reference)), statistic, paired=True,
                            vectorized=False, n_resamples=2000, method="percentile",
                            rng=np.random.default_rng(0)).bootstrap_distribution
    tail = (1 - INTERVAL) / 2 * 100
    assert one == pytest.approx(tuple(np.nanpercentile(draws, [tail, 100 - tail])))
    # k = S: the interval of the seeds' mean, as tau_interval gives it; the row carries both
    assert two == tau_interval(list(per_seed.mean(axis=1)), reference)
    row = make_row("20k x 3 ep", "budget", 60_000, per_seed, reference, Fidelity())
    assert row.tau_intervals == [one, two] and row.tau_interval == two and row.interval(1) == one
    for (lo, hi), tau in zip(row.tau_intervals, row.taus):
        assert lo <= tau <= hi
    assert seeds_intervals(per_seed, reference) == [one, two]  # seeded: the same output again


def test_the_ceiling_and_the_target_derive_from_the_reference():
    # tau 0.571 between two seeds: r = sin(pi/2 * 0.571), the mean's reliability 2r / (1 + r), the ceiling
    # 2/pi asin(sqrt(that))
    r = math.sin(math.pi / 2 * 4 / 7)
    assert tau_ceiling(4 / 7, 2) == pytest.approx(2 / math.pi * math.asin(math.sqrt(2 * r / (1 + r))))
    assert 4 / 7 < tau_ceiling(4 / 7, 2) < tau_ceiling(4 / 7, 8) < 1
    assert tau_ceiling(1.0, 2) == pytest.approx(1.0) and tau_ceiling(-0.2, 2) == 0 and tau_ceiling(None, 1) is None
    auto = choose_target(None, 4 / 7, 2)
    assert auto.value == pytest.approx(0.8 * 4 / 7) and auto.warning is None and "auto" in auto.source
    assert choose_target(None, 0.95, 2).value == 0.7  # capped
    assert choose_target(None, None, 1).value == 0.7  # one seed: not measured
    assert choose_target(None, -0.1, 2).value is None  # the reference's order is noise: no target
    # an explicit target: as given, with a warning above the self-agreement, another above the ceiling
    assert choose_target(0.5, 4 / 7, 2).warning is None
    assert "agreement with itself" in choose_target(0.7, 4 / 7, 2).warning
    assert "noise-free proxy" in choose_target(0.9, 4 / 7, 2).warning
    assert choose_target(0.9, 4 / 7, 2).value == 0.9


class _Arch:
    def __init__(self, key):
        self.key = key

    def structure_hash(self):
        return self.key


def _study(reference_fidelity_, budgets):
    """An in-memory calibration study: ``budgets`` maps a budget key to
    (budget dict, images, seed offset, per-seed accuracies)."""
    from nas.training.evaluate import EVALUATION

    study = optuna.create_study()
    for key, (budget, images, offset, per_seed) in budgets.items():
        for i, accuracies in enumerate(per_seed):
            for j, accuracy in enumerate(accuracies):
                study.add_trial(optuna.trial.create_trial(value=accuracy, user_attrs={
                    "kind": EVALUATION, "structure_hash": f"a{i}", "budget_key": key, "seed": offset + j,
                    "budget": budget, "train_images": images, "rungs": [[budget["rungs"][-1], accuracy]]}))
    return study


def test_analysis_recommends_by_the_lower_end_against_the_auto_target(monkeypatch):
    """Against a reference whose two seeds agree at tau 4/7, the default
    target is 0.8 x 4/7 (below the self-agreement and the ceiling, both
    printed): a cheap fidelity whose tau crosses it only at its point
    estimate is not recommended, a dearer one whose interval is above it
    is; the table prints each row's interval and each (fidelity, repeats)."""
    import nas.workflows.calibrate as calibrate
    from nas.workflows.calibrate import analyse, format_calibration, reference_fidelity

    seed_a = [0.70, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76, 0.77]
    seed_b = [0.735, 0.73, 0.725, 0.72, 0.74, 0.75, 0.76, 0.77]  # the first four reversed: tau 4/7
    reference = reference_fidelity(Fidelity(), 10.0, 2000)
    cheap = _per_seed([0.53, 0.50, 0.52, 0.51, 0.55, 0.54, 0.57, 0.56], [0.51, 0.53, 0.50, 0.52, 0.54, 0.56, 0.55, 0.57])
    dear = _per_seed([0.60 + 0.01 * i for i in range(8)], [0.605 + 0.01 * i for i in range(8)])
    study = _study(reference, {
        reference.budget_key(): (reference.as_dict(), 2000, 1000, _per_seed(seed_a, seed_b)),
        "cheap": ({"subset": 500, "rungs": [1], "batch_size": 50}, 500, 0, cheap),
        "dear": ({"subset": 1000, "rungs": [3], "batch_size": 50}, 1000, 0, dear)})
    monkeypatch.setattr(calibrate, "_zero_cost", lambda archs, seeds, data, runtime: {
        name: _per_seed(range(len(archs)), range(len(archs))) for name in calibrate.SCORES})
    result = analyse(study, [_Arch(f"a{i}") for i in range(8)], [0, 1], [1000, 1001], reference, None, None, None)
    assert result.reference_self_tau == pytest.approx(4 / 7)
    assert result.target == pytest.approx(0.8 * 4 / 7)
    assert result.target < result.reference_self_tau < result.reference_ceiling
    cheap_row, dear_row = result.rows[0], result.rows[1]
    assert (cheap_row.name, dear_row.name) == ("500 x 1 ep", "1k x 3 ep")
    assert cheap_row.taus[0] >= result.target > cheap_row.interval(1)[0]  # the premise: point over, lower end under
    assert cheap_row.tau >= result.target > cheap_row.interval(2)[0]
    assert dear_row.interval(1)[0] >= result.target
    assert result.recommendation == (dear_row, 1)

    out = format_calibration(result)
    lines = out.splitlines()
    assert f"tau between its seeds +0.571" in out and f"at about {result.reference_ceiling:+.3f}" in out
    assert "target: +0.457 (auto: 0.8 x the reference's self-agreement +0.571)" in out and "warning" not in out
    for row in result.rows:  # every row shows the interval of its 1-seed and its 2-seed tau
        line = next(line for line in lines if line.startswith(row.name + " "))
        for k in (1, 2):
            lo, hi = row.interval(k)
            assert f"{row.taus[k - 1]:+.3f} [{lo:+.2f}, {hi:+.2f}]" in line, (row.name, k)
    for row in (cheap_row, dear_row):  # and every (fidelity, repeats) with its interval and verdict
        for k in (1, 2):
            lo, hi = row.interval(k)
            verdict = "yes" if lo >= result.target else "no"
            head = [*row.name.split(), str(k), f"{row.images * k:,}"]
            assert any(line.split()[:len(head)] == head and
                       line.endswith(f"{row.taus[k - 1]:+.3f} [{lo:+.2f}, {hi:+.2f}]  {verdict}") for line in lines), \
                (row.name, k)
    recommendation = next(line for line in lines if line.startswith("recommendation:"))
    assert recommendation.startswith("recommendation: 1k x 3 ep with repeats 1: the lower end of its 90% interval")
    assert "reaches the target +0.457" in recommendation

    # an explicit target above the self-agreement: used as given, with one warning line (not an error)
    explicit = analyse(study, [_Arch(f"a{i}") for i in range(8)], [0, 1], [1000, 1001], reference, None, None, 0.7)
    out = format_calibration(explicit)
    assert explicit.target == 0.7 and "target: +0.700 (--target)" in out
    assert [line for line in out.splitlines() if "warning" in line] == [
        f"warning: {choose_target(0.7, 4 / 7, 2).warning}"]
    assert "--target 0.7 is above the reference's agreement with itself (+0.571" in out
    assert explicit.recommendation == (explicit.rows[1], 1)
    # a target no (fidelity, repeats) shows at its lower end: none, and the output says which crossed at the point
    strict = analyse(study, [_Arch(f"a{i}") for i in range(8)], [0, 1], [1000, 1001], reference, None, None, 0.6)
    strict.rows = strict.rows[:1]
    strict.recommendation = recommend(strict.rows, strict.target)
    out = format_calibration(strict)
    assert strict.recommendation is None and "recommendation: none" in out
    assert "tau reaches the target at its point estimate only (500 x 1 ep with repeats 1; 500 x 1 ep with " \
           "repeats 2)" in out


def test_zero_cost_scores_of_hand_computed_networks():
    import torch
    from torch import nn

    from nas.workflows.zero_cost import grad_norm, naswot, synflow

    # synflow of a bias-free linear chain: every layer's sum |theta * dR/dtheta| equals
    # R = 1^T |W2| |W1| 1; |W1| row sums 3.5 and 4, |W2| entries 2 and 1: R = 3.5*2 + 4*1 = 11
    chain = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        chain[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
        chain[1].weight.copy_(torch.tensor([[2.0, -1.0]]))
    assert synflow(chain, (3,)) == pytest.approx(22.0)
    assert chain[0].weight[0, 1] == -2.0  # the model itself is left as it was

    # grad_norm: zero weights, one image x = (1, 0) of class 0: softmax (0.5, 0.5), dL/dlogits
    # (-0.5, 0.5), dL/dW = [[-0.5, 0], [0.5, 0]], norm sqrt(0.5)
    linear = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        linear[0].weight.zero_()
    assert grad_norm(linear, torch.tensor([[1.0, 0.0]]), torch.tensor([0])) == pytest.approx(math.sqrt(0.5))

    # naswot: units (x1, x2, x1 + x2) after a ReLU; images (1, -1), (-1, 1), (1, 1) have codes
    # 100, 010, 111; N_A = 3, every Hamming distance 2: K = [[3,1,1],[1,3,1],[1,1,3]], det 20.
    # One ReLU as a module and one called as a function: both count
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 3, bias=False)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.linear(x))

    net = Net()
    with torch.no_grad():
        net.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    images = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    assert naswot(net, images) == pytest.approx(math.log(20))

    class Twice(Net):  # the same codes again through torch.nn.functional: K doubles, det x 8
        def forward(self, x):
            return torch.nn.functional.relu(super().forward(x))

    twice = Twice()
    twice.load_state_dict(net.state_dict())
    assert naswot(twice, images) == pytest.approx(math.log(160))


def test_write_fidelity_keeps_the_rest_of_the_space_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("# my space\nbackbone: resnet20\ntypes: [none, se]   # two choices\n"
                    "fidelity: {dataset: cifar10, subset: 10000, rungs: [1, 3], eta: 3}\nsampler: random\n")
    space = load_space(path)
    budget = Fidelity(subset=20000, val_size=5000, rungs=[2.0, 6.0])
    row = Row("20k x 6 ep", "budget", 120_000, 0.01, [0.6, 0.75], (0.5, 0.9), 0.8, True, budget)
    write_fidelity(space, row, 2, "calibrated today")
    text = path.read_text()
    assert text.startswith("# my space\nbackbone: resnet20\ntypes: [none, se]   # two choices\n")
    assert "# calibrated today\nfidelity: {dataset: cifar10, subset: 20000, rungs: [2, 6], eta: 3, val_size: 5000, " \
           "repeats: 2}\nsampler: random\n" in text
    again = load_space(path).fidelity
    assert (again.subset, again.rungs, again.repeats, again.eta) == (20000, [2.0, 6.0], 2, 3)
    write_fidelity(load_space(path), row, 1, "calibrated again")  # replaces its own note, not adds one
    assert path.read_text().count("# calibrated") == 1 and "repeats: 1" in path.read_text()


def test_write_fidelity_replaces_a_block_fidelity_and_adds_a_missing_one(tmp_path):
    budget = Fidelity(subset=20000, rungs=[2.0, 6.0])
    row = Row("20k x 6 ep", "budget", 120_000, 0.01, [0.75], (0.5, 0.9), 0.8, True, budget)
    path = tmp_path / "block.yaml"
    path.write_text("backbone: resnet20\nfidelity:\n  subset: 10000\n  # the rungs\n  rungs:\n    - 1\n    - 3\n"
                    "  eta: 2\n\n# the types\ntypes: [none, se]\n")
    write_fidelity(load_space(path), row, 1, "calibrated")
    assert path.read_text() == ("backbone: resnet20\n# calibrated\nfidelity: {subset: 20000, rungs: [2, 6], eta: 2, "
                                "val_size: null, repeats: 1}\n\n# the types\ntypes: [none, se]\n")
    assert load_space(path).fidelity.eta == 2
    bare = tmp_path / "bare.yaml"
    bare.write_text("backbone: resnet20\ntypes: [none, se]")
    write_fidelity(load_space(bare), row, 2, "calibrated")
    assert load_space(bare).fidelity.rungs == [2.0, 6.0] and load_space(bare).fidelity.repeats == 2


def test_the_sample_holds_the_baseline_and_spreads_over_macs():
    space = parse_space("backbone: resnet20\nwidth_multiplier: 0.25\ntypes: [none, se, cbam]\n"
                        "params: {se: {r: [2, 4]}, cbam: {r: [2, 4]}}\n", name="t")
    sample = draw_sample(space, 4, 10, 32, draws=40)
    assert len(sample) == 4 and len({c.structure_hash() for c in sample}) == 4
    assert sample[0].structure_hash() == space.base_config(10).structure_hash()
    macs = [nas.profile(nas.build_model(c), 32)["macs"] for c in sample[1:]]
    assert macs == sorted(macs) and macs[0] < macs[-1]
    assert [c.structure_hash() for c in draw_sample(space, 4, 10, 32, draws=40)] == \
        [c.structure_hash() for c in sample]  # the same sample again


SPACE = ("backbone: resnet20\nwidth_multiplier: 0.25\nstages: [3]\ntypes: [none, se, eca]\n"
         "params: {se: {r: 4}}\nfidelity: {subset: 100, val_size: 100, rungs: [0.5, 1], batch_size: 50}\n")


def _configs(tmp_path):
    space = parse_space(SPACE, name="tiny")
    folder = tmp_path / "configs"
    folder.mkdir()
    for kind in ("none", "se", "eca"):
        space.sample(optuna.trial.FixedTrial({"s3.type": kind}), num_classes=10).save(folder / f"{kind}.yaml")
    return folder


def test_calibrate_end_to_end_resumes_without_retraining(tmp_path, cifar10_root, trainings, capsys):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(SPACE)
    storage = f"sqlite:///{tmp_path}/cal.db"
    args = ["calibrate", "--space", str(space_file), "--configs", str(_configs(tmp_path)), "--seeds", "2",
            "--reference-subset", "200", "--reference-epochs", "1", "--storage", storage,
            "--data", str(cifar10_root), "--precision", "fp32"]
    trainings.reset(interrupt_at=5)
    assert main(args) == 130
    assert "resume with: python search.py calibrate" in capsys.readouterr().err
    study = optuna.load_study(study_name="calibrate:tiny", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 4 + [TrialState.FAIL]

    trainings.reset()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert trainings.started == 3 * 2 * 2 - 4  # 3 configs x 2 seeds x (fidelity, reference), less the 4 stored
    for line in ("100 x 0.5 ep (rung of 1)", "100 x 1 ep", "synflow", "grad_norm", "naswot", "params", "macs",
                 "target: ", "the (fidelity, repeats) a recommendation can be", "recommendation:"):
        assert line in out, line
    study = optuna.load_study(study_name="calibrate:tiny", storage=storage)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 12 and {t.user_attrs["role"] for t in done} == {"fidelity", "reference"}
    assert {(t.user_attrs["structure_hash"], t.user_attrs["seed"], t.user_attrs["role"]) for t in done}.__len__() == 12
    assert study.user_attrs["kind"] == "calibrate" and len(study.user_attrs["commands"]) == 2

    trainings.reset(interrupt_at=1)  # a third run trains nothing
    assert main(args) == 0 and trainings.started == 0
    assert "every training was stored already" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--sample", "1"], "--sample: must be >= 2"),
    (["--seeds", "0"], "--seeds: must be 1 to 8"),
    (["--seeds", "9"], "--seeds: must be 1 to 8"),
    (["--target", "1.5"], "--target:"),
    (["--reference-epochs", "0.1"], "--reference-epochs:"),
    (["--configs", "nowhere.yaml"], "--configs: file not found: nowhere.yaml"),
])
def test_bad_calibrate_input_is_one_line(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--space", "sk", "--storage", f"sqlite:///{tmp_path}/x.db", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "x.db").exists()  # refused before anything was written


def test_a_rung_missing_from_one_training_drops_that_row_only():
    """A budget whose trainings agree on their last epoch keeps its row even
    when one of them lacks an earlier rung (stored by a resumed training
    before rungs survived a resume); that rung is reported, not guessed."""
    from nas.workflows.calibrate import _rung_epochs

    full = [[1.0112, 0.36], [3.008, 0.52]]
    cells = {(0, 0): full, (0, 1): full, (1, 0): [[3.008, 0.54]], (1, 1): full}
    assert _rung_epochs(cells) == ([3.008], [(1.0112, 3)])
    assert _rung_epochs({(0, 0): full, (0, 1): full}) == ([1.0112, 3.008], [])
    # trainings ending at different epochs are not one budget
    assert _rung_epochs({(0, 0): full, (0, 1): [[1.0112, 0.36]]}) == ([], [])


def test_reference_self_agreement_is_tau_between_its_seeds():
    from nas.workflows.calibrate import self_agreement

    # seed columns [1, 2, 3] and [1, 3, 2]: 2 concordant pairs, 1 discordant -> tau 1/3
    assert self_agreement(np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0]])) == pytest.approx(1 / 3)
    # three seeds: the mean over the pairs (1, 2) -> 1/3, (1, 3) -> 1, (2, 3) -> 1/3
    assert self_agreement(np.array([[1.0, 1.0, 1.0], [2.0, 3.0, 2.0], [3.0, 2.0, 3.0]])) == pytest.approx(5 / 9)
    assert self_agreement(np.array([[1.0], [2.0]])) is None
