"""Seed noise: how far one evaluation's accuracy can be trusted, and which
differences between front points it resolves (design.md section 6a).

A trial trained with several seeds carries ``seed_accuracies``; everything
here reads that attr. Two decisions rest on it:

* :func:`near_front`, in the search: is a fresh single-seed result close
  enough to the front to be worth more seeds?
* :func:`dominance_probability`, in the reports: given two front
  neighbours' seeds, how sure is it that the more expensive one is really
  more accurate? A bootstrap over each point's seeds (the resampling idea
  Budszuhn et al., arXiv 2503.21495, use for the probability that one
  configuration dominates another); below :data:`RESOLVED` the pair is
  marked as within noise.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: a front neighbour's extra accuracy counts as resolved when the bootstrap
#: says it is real with at least this probability
RESOLVED = 0.9


def seed_accuracies(trial) -> list[float]:
    """The accuracies of every seed a trial was trained with (one for an
    unrepeated trial, none for an untrained one)."""
    return [float(a) for a in (trial.user_attrs.get("seed_accuracies") or [])]


def pooled_seed_std(trials: Sequence) -> float:
    """Seed noise of one evaluation: the square root of the mean of the
    sample variances of the trials trained with several seeds; 0 while
    fewer than two such trials exist (no estimate yet)."""
    variances = [statistics.variance(s) for s in map(seed_accuracies, trials) if len(s) > 1]
    return math.sqrt(statistics.fmean(variances)) if len(variances) >= 2 else 0.0


def near_front(point: tuple[float, float], others: Sequence[tuple[float, float]], noise: float) -> bool:
    """True unless some (accuracy, MACs) of ``others`` dominates ``point``
    by more than ``noise`` in accuracy: at most its MACs and at least
    ``noise`` more accurate, strictly better in one of the two."""
    accuracy, macs = point
    for a, m in others:
        if m <= macs and a >= accuracy + noise and (m < macs or a > accuracy + noise):
            return False
    return True


def dominance_probability(higher: Sequence[float], lower: Sequence[float], *, resamples: int = 4000,
                          seed: int = 0) -> float | None:
    """Probability that the mean of ``higher``'s seeds is above the mean of
    ``lower``'s, over bootstrap resamples of each (ties count half). None when
    either has a single seed: one seed says nothing about its noise."""
    if len(higher) < 2 or len(lower) < 2:
        return None
    result = stats.bootstrap((np.asarray(higher, float), np.asarray(lower, float)), _mean_difference,
                             paired=False, vectorized=True, n_resamples=resamples, method="percentile",
                             rng=np.random.default_rng(seed))
    diffs = result.bootstrap_distribution
    return float(np.mean(diffs > 0) + 0.5 * np.mean(diffs == 0))


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def neighbour_marks(front: Sequence) -> list[str]:
    """For a front sorted by MACs, one mark per point on its step up from
    the cheaper neighbour: ``""`` (the first point, or an accuracy gain its
    seeds resolve), ``"~N"`` (within noise of trial N: the gain is not
    resolved at :data:`RESOLVED`), or ``"?"`` (a point with one seed: its
    noise is unknown)."""
    marks = [""] * len(front)
    for i in range(1, len(front)):
        p = dominance_probability(seed_accuracies(front[i]), seed_accuracies(front[i - 1]))
        if p is None:
            marks[i] = "?"
        elif p < RESOLVED:
            marks[i] = f"~{front[i - 1].number}"
    return marks


def marks_legend() -> str:
    """The line under a front table that explains its noise marks."""
    return (f"noise: ~N = more MACs than front neighbour trial N for an accuracy gain its seeds do not resolve "
            f"(bootstrap P(gain > 0) < {RESOLVED:g}); ? = one seed, noise unknown")
