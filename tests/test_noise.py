"""Seeds on the front (issue 14 item 1): the noise helpers against hand-made
cases, and the search's repeats with a stand-in trainer whose accuracies
are set per architecture and seed, so every decision is known in advance."""
from __future__ import annotations

import math
import statistics
import time

import optuna
import pytest
from optuna.trial import TrialState

import nas.search.halving
import nas.search.objective as search
from nas.device import resolve_runtime
from nas.search import results
from nas.search import run as search_run
from nas.search.space import parse_space
from nas.training.noise import (
    UNKNOWN,
    SeedNoise,
    dominance_probability,
    gain,
    near_front,
    neighbour_marks,
    pooled_noise,
    pooled_seed_std,
    seeds_needed,
    what_it_would_take,
)
from nas.training.train import TrainResult

optuna.logging.set_verbosity(optuna.logging.ERROR)


class _Trial:  # what the noise helpers read of a FrozenTrial
    def __init__(self, number, seeds):
        self.number, self.user_attrs = number, {"seed_accuracies": seeds}


def test_pooled_seed_std_needs_two_repeated_trials():
    assert pooled_seed_std([_Trial(0, [0.5, 0.6]), _Trial(1, [0.7])]) == 0.0
    # variances 0.005 and 0.02 (sample, ddof 1): pooled sqrt(0.0125)
    got = pooled_seed_std([_Trial(0, [0.5, 0.6]), _Trial(1, [0.7, 0.9]), _Trial(2, [0.4])])
    assert got == pytest.approx(math.sqrt(0.0125))


def test_near_front_with_and_without_a_noise_margin():
    front = [(0.60, 10.0), (0.70, 20.0)]
    assert near_front((0.65, 15.0), front, 0.0)  # between the two: on the front
    assert not near_front((0.55, 15.0), front, 0.0)  # (0.60, 10) dominates it
    assert near_front((0.55, 15.0), front, 0.06)  # ... by less than the noise
    assert not near_front((0.55, 15.0), front, 0.04)  # more than the noise better: dominated
    assert near_front((0.60, 10.0), front, 0.0)  # equal to a front point: not dominated
    assert not near_front((0.60, 12.0), front, 0.0)  # same accuracy, more MACs


def test_dominance_probability_is_the_t_probability_of_the_mean_gain():
    # gain 0.01 with a pooled std of 0.01 on 2 degrees of freedom and 3 seeds each:
    # t = 0.01 / (0.01 * sqrt(2/3)) = 1.2247; Student-t with 2 df has the closed form
    # F(t) = 1/2 + t / (2 sqrt(2 + t^2)) = 0.8273 (the normal value 0.8897 claimed more than the data allow)
    noise = SeedNoise(0.01, 2)
    p = dominance_probability([0.62, 0.60, 0.61], [0.60, 0.59, 0.61], noise)
    t = 0.01 / (0.01 * math.sqrt(2 / 3))
    assert p == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-9)
    assert p == pytest.approx(0.8273, abs=1e-4)
    assert dominance_probability([0.80, 0.81, 0.82], [0.60, 0.61, 0.62], SeedNoise(0.01, 40)) == pytest.approx(1.0)
    assert dominance_probability([0.60, 0.61], [0.62, 0.63], noise) < 0.1  # the "higher" one is worse
    # one seed on a side is judged with the pooled std (se = sigma * sqrt(1 + 1/2)); 1 df: F = 1/2 + atan(t) / pi
    t1 = 0.075 / (0.05 * math.sqrt(1.5))
    assert dominance_probability([0.7], [0.6, 0.65], SeedNoise(0.05, 1)) == pytest.approx(0.5 + math.atan(t1) / math.pi)
    assert dominance_probability([0.7, 0.71], [0.6, 0.65], UNKNOWN) is None  # no std known
    marks = neighbour_marks([_Trial(3, [0.0, 0.60, 0.59, 0.61]), _Trial(5, [0.0, 0.80, 0.81, 0.82]),
                             _Trial(7, [0.0, 0.82, 0.80, 0.81, 0.83]), _Trial(8, [0.9])], SeedNoise(0.01, 30))
    # judged on the seeds after the first (the selecting one, here 0.0, is ignored):
    # 5 over 3: certain; 7 over 5: gain 0.005, t = 0.005 / (0.01 * sqrt(1/4 + 1/3)) = 0.65: not resolved;
    # 8 has no seed after selection: ?
    assert marks == ["", "", "~5", "?"]


def test_pooled_variance_is_weighted_by_degrees_of_freedom():
    # 4 seeds with variance 0.0004 (3 df) and 2 seeds with variance 0.01 (1 df):
    # pooled (3 * 0.0004 + 1 * 0.01) / 4 = 0.0028, not the unweighted mean 0.0052
    a = [0.50, 0.52, 0.48, 0.50]
    b = [0.60, 0.60 + math.sqrt(0.02)]
    noise = pooled_noise([a, b])
    expected = (3 * statistics.variance(a) + 1 * statistics.variance(b)) / 4
    assert noise.std == pytest.approx(math.sqrt(expected)) and noise.df == 4
    unweighted = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2)
    assert abs(noise.std - unweighted) > 0.01
    assert pooled_noise([a]) == UNKNOWN  # one design: no estimate (as before)


def test_paired_test_is_used_only_where_the_seeds_are_shared_and_it_is_stronger():
    # four designs, the same 4 seeds, a strong seed effect (seed 1 is good for every design): correlation ~1
    effect = {0: 0.0, 1: 0.03, 2: -0.02, 3: 0.01}
    designs = [{s: 0.5 + k * 0.001 + e + 0.001 * ((s * 7 + k * k) % 5) for s, e in effect.items()} for k in range(4)]
    noise = pooled_noise(designs)
    assert noise.correlation > 0.9
    hi, lo = designs[3], designs[0]
    g = gain(list(hi.values()), list(lo.values()), noise, higher_seeds=list(hi), lower_seeds=list(lo))
    assert g.test == "paired t" and g.df == 3
    unpaired = gain(list(hi.values()), list(lo.values()), noise)
    assert unpaired.test == "pooled t" and g.probability > unpaired.probability
    # other seeds on one side: never paired
    assert gain(list(hi.values()), list(lo.values()), noise, higher_seeds=[0, 1, 2, 3],
                lower_seeds=[4, 5, 6, 7]).test == "pooled t"
    # no correlation: the pooled test (more degrees of freedom) is the stronger one
    flat = pooled_noise([{0: 0.5, 1: 0.52}, {0: 0.52, 1: 0.5}, {0: 0.51, 1: 0.53}, {0: 0.53, 1: 0.51}])
    assert flat.correlation < 0.5
    assert gain([0.5, 0.52], [0.49, 0.5], flat, higher_seeds=[0, 1], lower_seeds=[0, 1]).test == "pooled t"


def test_seeds_needed_grows_as_the_effect_shrinks_and_matches_the_t_power():
    from scipy import stats

    n = seeds_needed(0.02, 0.01)
    # its power at n seeds is >= 80 %, at n - 1 below (one-sided t at 0.9, 2 (n - 1) df)
    def power(k):
        df = 2 * (k - 1)
        return stats.nct.sf(stats.t.ppf(0.9, df), df, 0.02 / (0.01 * math.sqrt(2 / k)))
    assert power(n) >= 0.8 and (n == 2 or power(n - 1) < 0.8)
    assert seeds_needed(0.005, 0.01) > n > 1
    assert seeds_needed(0.0001, 0.01) is None  # over 64 seeds
    line = what_it_would_take(0.003, SeedNoise(0.01, 6))
    assert f"{seeds_needed(0.005, 0.01)} seeds per arm" in line and "0.5 points" in line


# --------------------------------------------------------------------------- repeats in the search

#: accuracy of each stage-3 attention type with seed 0 at the end, at the
#: first rung (chosen so that only cbam is stopped there: se's late drop is
#: what makes it dominated), and what each further seed adds
ACCURACY = {"none": 0.50, "eca": 0.60, "se": 0.55, "cbam": 0.30}
FIRST_RUNG = {"none": 0.25, "eca": 0.30, "se": 0.40, "cbam": 0.10}
SEED_SHIFT = {0: 0.0, 1: 0.01, 2: -0.01}
SECONDS_PER_TRAINING = 10.0


def _kind(cfg) -> str:
    return cfg.stages[2].blocks[0].attention.type


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _stand_in_trainer(calls: list, clock: _Clock):
    def train_architecture(cfg, data, fidelity, seed, runtime, callback=None, model=None, progress=None):
        calls.append((_kind(cfg), seed))
        final = ACCURACY[_kind(cfg)] + SEED_SHIFT[seed]
        rungs = []
        for i, epochs in enumerate(fidelity.rungs):
            accuracy = final if i == len(fidelity.rungs) - 1 else FIRST_RUNG[_kind(cfg)]
            rungs.append((epochs, accuracy))
            if callback is not None and callback(i, epochs, accuracy):
                clock.now += SECONDS_PER_TRAINING / 2
                return TrainResult(accuracy, rungs, True, epochs, 50, SECONDS_PER_TRAINING / 2, 0.0, "fp32")
        clock.now += SECONDS_PER_TRAINING
        return TrainResult(final, rungs, False, fidelity.epochs, 100, SECONDS_PER_TRAINING, 0.0, "fp32")

    return train_architecture


SPACE = ("backbone: resnet20\nwidth_multiplier: 0.25\nstages: [3]\ntypes: [none, se, eca, cbam]\n"
         "params: {se: {r: 4}, cbam: {r: 4}}\nsampler: random\n"
         "fidelity: {rungs: [0.5, 1], eta: 2, batch_size: 16, repeats: 3}\n")


def test_front_trials_get_every_seed_dominated_and_pruned_ones_do_not(monkeypatch, tmp_path, tiny_data):
    calls: list = []
    clock = _Clock()
    monkeypatch.setattr(search, "train_architecture", _stand_in_trainer(calls, clock))
    monkeypatch.setattr(search_run, "load_search_data", lambda space, data: tiny_data)
    monkeypatch.setattr(time, "perf_counter", clock)
    # this test is about repeats: halving judges with whatever peers there are (its minimum is tested in
    # tests/test_halving.py)
    monkeypatch.setattr(nas.search.halving, "MIN_PEERS_PER_ETA", 0)
    space = parse_space(SPACE, name="t")
    lines: list[str] = []
    run = search_run.SearchRun(space=space, study_name="t", storage=f"sqlite:///{tmp_path}/t.db", trials=4,
                           timeout=None, device="cpu", precision="fp32")
    # in this order: none (the first: on the empty front), eca (more MACs, more
    # accurate: on the front), se (more MACs than eca and 0.05 less accurate:
    # beyond twice the pooled seed std of 0.01), cbam (last at the first rung: pruned)
    original = search.create_or_resume

    def enqueued(*args, **kwargs):
        study = original(*args, **kwargs)
        for kind in ("none", "eca", "se", "cbam"):
            study.enqueue_trial({"s3.type": kind})
        return study

    monkeypatch.setattr(search_run, "create_or_resume", enqueued)  # where the run looks it up
    study = search_run.run_search(run, out=lines.append)
    none, eca, se, cbam = study.trials
    assert calls == [("none", 0), ("none", 1), ("none", 2), ("eca", 0), ("eca", 1), ("eca", 2), ("se", 0),
                     ("cbam", 0)]
    assert none.user_attrs["seed_accuracies"] == pytest.approx([0.50, 0.51, 0.49])
    assert none.values[0] == pytest.approx(0.50) and none.user_attrs["accuracy_std"] == pytest.approx(0.01)
    assert eca.user_attrs["seed_accuracies"] == pytest.approx([0.60, 0.61, 0.59])
    assert eca.values[0] == pytest.approx(0.60)
    assert se.state == TrialState.COMPLETE and se.user_attrs["seed_accuracies"] == pytest.approx([0.55])
    assert "accuracy_std" not in se.user_attrs and se.user_attrs["front_noise"] == pytest.approx(0.02)
    assert cbam.state == TrialState.PRUNED and "seed_accuracies" not in cbam.user_attrs
    # every seed's images and seconds are the trial's cost
    assert none.user_attrs["images_trained"] == 300 and none.user_attrs["train_seconds"] == 30.0
    assert se.user_attrs["images_trained"] == 100
    # the ETA after the first trial: its three trainings (30 s) per trial, for the 3 left
    first = next(line for line in lines if line.startswith("trial    0"))
    assert "0.50 ± 0.0100 (3 seeds)" in first.replace("acc 0.5000", "0.50")
    assert "ETA 1.5 min" in first
    front = results.format_front(results.pareto_front(study))
    assert "± std" in front and "0.0100" in front
    # the dashboard's copy of the front: eca's gain over none is resolved by its seeds
    assert [(p["trial"], p["seeds"], p["noise"]) for p in study.user_attrs["front"]] == [(0, 3, ""), (1, 3, "")]


def test_repeats_one_trains_one_seed(monkeypatch, tiny_data):
    calls: list = []
    monkeypatch.setattr(search, "train_architecture", _stand_in_trainer(calls, _Clock()))
    space = parse_space(SPACE.replace("repeats: 3", "repeats: 1"), name="t")
    objective = search.Objective(space, tiny_data, resolve_runtime("cpu", "fp32"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"s3.type": "none"})
    study.optimize(objective, n_trials=1)
    assert calls == [("none", 0)] and study.trials[0].user_attrs["seed_accuracies"] == [0.5]


def test_a_diverged_or_failed_repeat_seed_is_recorded_and_costed(monkeypatch, tiny_data):
    from nas.training.train import DivergedError

    calls: list = []
    clock = _Clock()
    fake = _stand_in_trainer(calls, clock)
    failures = {("none", 1): MemoryError("cannot allocate 9 GiB"),
                ("none", 2): DivergedError("loss became nan at step 2", images_seen=40, train_seconds=4.0)}

    def trainer(cfg, data, fidelity, seed, runtime, callback=None, model=None, progress=None):
        if (_kind(cfg), seed) in failures:
            raise failures[(_kind(cfg), seed)]
        return fake(cfg, data, fidelity, seed, runtime, callback, model)

    monkeypatch.setattr(search, "train_architecture", trainer)
    objective = search.Objective(parse_space(SPACE, name="t"), tiny_data, resolve_runtime("cpu", "fp32"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"s3.type": "none"})
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.COMPLETE  # the first seed's result stands
    # the memory error's seed is left out; the diverged one counts at chance (10 classes)
    assert t.user_attrs["seed_accuracies"] == pytest.approx([0.50, 0.10])
    assert t.values[0] == pytest.approx(0.30)
    assert t.user_attrs["images_trained"] == 100 + 40 and t.user_attrs["train_seconds"] == 14.0
    failed = t.user_attrs["seed_failures"]
    assert failed[0].startswith("seed 1: MemoryError") and failed[1].startswith("seed 2: DivergedError")
    # instability is not seed noise: such a trial does not widen the noise margin
    assert pooled_seed_std([t, _Trial(1, [0.5, 0.6]), _Trial(2, [0.7, 0.9])]) == pytest.approx(math.sqrt(0.0125))


def test_the_baseline_is_never_stopped_by_halving(monkeypatch, tiny_data):
    # three depthwise SK trials reach the first rung cheaper and more accurate
    # than the attention-free backbone, so with eta 2 halving stops a plain
    # trial of it there; the marked baseline trains its whole budget
    monkeypatch.setitem(ACCURACY, "sk", 0.6)
    monkeypatch.setitem(FIRST_RUNG, "sk", 0.4)
    monkeypatch.setattr(nas.search.halving, "MIN_PEERS_PER_ETA", 0)  # judged against three peers
    monkeypatch.setattr(search, "train_architecture", _stand_in_trainer([], _Clock()))
    space = parse_space("backbone: resnet20\nwidth_multiplier: 0.25\nstages: [3]\ntypes: [none, sk]\n"
                        "params: {sk: {M: 1, G: 8, r: 4, L: 4}}\nsampler: random\n"
                        "fidelity: {rungs: [0.5, 1], eta: 2, batch_size: 16}\n", name="t")
    objective = search.Objective(space, tiny_data, resolve_runtime("cpu", "fp32"))
    states = {}
    for marks in ({}, {"baseline": True}):
        study = optuna.create_study(directions=["maximize", "minimize"])
        for _ in range(3):
            study.enqueue_trial({"s3.type": "sk"}, skip_if_exists=False)
        study.enqueue_trial({"s3.type": "none"}, user_attrs=marks)
        study.optimize(objective, n_trials=4)
        sk, plain = study.trials[0], study.trials[3]
        assert sk.user_attrs["macs"] < plain.user_attrs["macs"]
        states[bool(marks)] = (plain.state, len(plain.user_attrs["rungs"]))
    assert states == {False: (TrialState.PRUNED, 1), True: (TrialState.COMPLETE, 2)}
