"""Seed noise: how far one evaluation's accuracy can be trusted, and which
differences between front points it resolves (design.md section 6a).

A trial trained with several seeds carries ``seed_accuracies``; everything
here reads that attr. Two decisions rest on it:

* :func:`near_front`, in the search: is a fresh single-seed result close
  enough to the front to be worth more seeds?
* :func:`dominance_probability`, in the reports: given two front
  neighbours' seed means, how sure is it that the more expensive one is
  really more accurate? The difference of two means of n1 and n2 seeds has
  a standard error of sigma * sqrt(1/n1 + 1/n2), with sigma the seed std
  pooled over every repeated trial of the study (many more seeds than any
  one pair has: a bootstrap over a pair's own two or three seeds would
  call almost any non-overlapping pair certain); P(gain > 0) is the normal
  probability of that, in the spirit of the probability of dominance that
  Budszuhn et al. (arXiv 2503.21495) estimate. Below :data:`RESOLVED` the
  pair is marked as within noise.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


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
    fewer than two such trials exist (no estimate yet). Trials with a
    diverged seed (counted at chance accuracy) are left out: that is
    instability, not the spread of a result."""
    variances = [statistics.variance(seed_accuracies(t)) for t in trials
                 if len(seed_accuracies(t)) > 1 and not t.user_attrs.get("seed_failures")]
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


def dominance_probability(higher: Sequence[float], lower: Sequence[float], seed_std: float) -> float | None:
    """Probability that ``higher``'s true mean accuracy is above
    ``lower``'s, given their seeds' accuracies and the pooled ``seed_std``
    (normal approximation of the difference of means). None when either has
    a single seed or no std is known: then nothing can be said."""
    if len(higher) < 2 or len(lower) < 2 or not seed_std > 0:
        return None
    gain = statistics.fmean(higher) - statistics.fmean(lower)
    z = gain / (seed_std * math.sqrt(1 / len(higher) + 1 / len(lower)))
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))  # the standard normal CDF (no scipy import: ~2 s per process)


def neighbour_marks(front: Sequence, seed_std: float) -> list[str]:
    """For a front sorted by MACs, one mark per point on its step up from
    the cheaper neighbour: ``""`` (the first point, or an accuracy gain the
    seeds resolve), ``"~N"`` (within noise of trial N: the gain is not
    resolved at :data:`RESOLVED`), or ``"?"`` (either point has one seed,
    or no seed std is known yet)."""
    marks = [""] * len(front)
    for i in range(1, len(front)):
        p = dominance_probability(seed_accuracies(front[i]), seed_accuracies(front[i - 1]), seed_std)
        if p is None:
            marks[i] = "?"
        elif p < RESOLVED:
            marks[i] = f"~{front[i - 1].number}"
    return marks


def marks_legend(seed_std: float) -> str:
    """The line under a front table that explains its noise marks."""
    known = f"pooled seed std {seed_std:.4f}" if seed_std > 0 else "no seed std known yet"
    return (f"noise: ~N = more MACs than front neighbour trial N for an accuracy gain the seeds do not resolve "
            f"(P(gain > 0) < {RESOLVED:g}, {known}); ? = one seed, noise unknown")
