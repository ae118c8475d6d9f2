"""Verdicts that hold their stated error rates (issue 34): the real decision
path, simulated with no real differences (false wins at most the nominal
rate), with a real difference (detected as often as the planned power
says), and the search's front free of its selection's bias. Seeded, so
each run asserts on the same numbers."""
from __future__ import annotations

import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import null_rate  # noqa: E402
import winners_curse  # noqa: E402

from nas.training.noise import RESOLVED, bonferroni, seeds_needed  # noqa: E402

NOMINAL = 1 - RESOLVED


@pytest.mark.parametrize("designs", [1, 3, 8])
def test_false_win_rate_of_promote_verdict_is_at_most_nominal(designs):
    rate, se = null_rate.promotion_rate(designs, seeds=2, sims=2000, effect=0.0, seed=designs)
    assert rate <= NOMINAL + 2 * se, (designs, rate, se)


@pytest.mark.parametrize("designs", [1, 3])
def test_the_rule_before_failed_the_same_check(designs):
    """The simulation can tell: the normal rule with the unweighted pooled
    std broke the nominal rate (16 % and 15 % at 10 %)."""
    rate, se = null_rate.promotion_rate(designs, seeds=2, sims=2000, effect=0.0, seed=designs, rule="normal")
    assert rate > NOMINAL + 2 * se, (designs, rate, se)


def test_front_marks_resolve_no_more_steps_than_nominal():
    rate, se, judged = null_rate.front_mark_rate(trials=40, sims=200, seed=1)
    assert judged > 500
    assert rate <= NOMINAL + 2 * se, (rate, se)


@pytest.mark.parametrize("designs", [1, 3])
def test_a_two_sigma_gain_with_the_seeds_said_to_be_needed_is_found(designs):
    seeds = seeds_needed(2.0, 1.0, level=bonferroni(designs), arms=designs + 1)
    assert seeds is not None and 2 <= seeds <= 8
    power, se = null_rate.promotion_rate(designs, seeds=seeds, sims=2000, effect=2.0, seed=10 + designs)
    assert power >= 0.8 - 2 * se, (designs, seeds, power)
    # and one seed fewer than that is not enough for the planned power (the plan is not wasteful)
    if seeds > 2:
        fewer, _ = null_rate.promotion_rate(designs, seeds=seeds - 1, sims=2000, effect=2.0, seed=20 + designs)
        assert fewer < power


def test_front_designs_show_no_phantom_gain_over_the_baseline():
    after = winners_curse.winners_curse(trials=40, repeats=2, sims=400, seed=0, rule="after")
    assert abs(after["front_mean"]) <= 0.25, after
    # the same simulation finds the bias of the rule before (+0.78 sigma in the issue)
    before = winners_curse.winners_curse(trials=40, repeats=2, sims=100, seed=0, rule="before")
    assert before["front_mean"] > 0.5, before
