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
import nas.evaluate
from nas.calibrate import (Row, draw_sample, rank_agreement, recommend, seeds_taus, tau_interval,
                           write_fidelity)
from nas.cli import main
from nas.space import Fidelity, load_space, parse_space


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


def _row(name, images, taus, kind="budget"):
    return Row(name, kind, images, 0.01, taus, (0.0, 1.0), 0.5, True, Fidelity() if kind == "budget" else None)


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


def test_zero_cost_scores_of_hand_computed_networks():
    import torch
    from torch import nn

    from nas.zero_cost import grad_norm, naswot, synflow

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
                 "recommendation:"):
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
    from nas.calibrate import _rung_epochs

    full = [[1.0112, 0.36], [3.008, 0.52]]
    cells = {(0, 0): full, (0, 1): full, (1, 0): [[3.008, 0.54]], (1, 1): full}
    assert _rung_epochs(cells) == ([3.008], [(1.0112, 3)])
    assert _rung_epochs({(0, 0): full, (0, 1): full}) == ([1.0112, 3.008], [])
    # trainings ending at different epochs are not one budget
    assert _rung_epochs({(0, 0): full, (0, 1): [[1.0112, 0.36]]}) == ([], [])


def test_reference_self_agreement_is_tau_between_its_seeds():
    from nas.calibrate import self_agreement

    # seed columns [1, 2, 3] and [1, 3, 2]: 2 concordant pairs, 1 discordant -> tau 1/3
    assert self_agreement(np.array([[1.0, 1.0], [2.0, 3.0], [3.0, 2.0]])) == pytest.approx(1 / 3)
    # three seeds: the mean over the pairs (1, 2) -> 1/3, (1, 3) -> 1, (2, 3) -> 1/3
    assert self_agreement(np.array([[1.0, 1.0, 1.0], [2.0, 3.0, 2.0], [3.0, 2.0, 3.0]])) == pytest.approx(5 / 9)
    assert self_agreement(np.array([[1.0], [2.0]])) is None
