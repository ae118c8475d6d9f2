"""Seed noise and the one decision function: is a gain real, and what would
it take to know (docs/design.md section 6a).

A trial trained with several seeds carries ``seed_accuracies``; everything
here reads that attr (or plain lists of accuracies). The decisions:

* :func:`near_front`, in the search: is a fresh single-seed result close
  enough to the front to be worth more seeds?
* :func:`gain`, everywhere a verdict is printed (the front's noise marks,
  ``promote``, ``ablate``, ``compare``, the dashboard note): the gain of one
  design's mean accuracy over another's, its standard error and the
  probability that it is above zero. The seed std is *estimated*, pooled
  over every design of the command (:func:`pooled_noise`, each design's
  sample variance weighted by its n - 1), so the gain over its standard
  error is Student-t with the pooled degrees of freedom, not normal: with
  2-4 degrees of freedom the normal probability claimed a 10 % error rate
  and delivered 11-16 % (benchmarks/null_rate.py). P(gain > 0) is the t
  probability, which is also the posterior probability of a positive gain
  under a flat prior on the means and on log sigma.
* :func:`seeds_needed`: how many seeds per arm would resolve a gain of a
  given size at the tool's error rate with 80 % power.

Paired or pooled: two trainings with the same seed see the same batch
order and augmentation, so their accuracies can be correlated (common
random numbers). A paired test on per-seed differences removes that shared
part but has only n - 1 degrees of freedom (1 with two seeds: its 90 %
t quantile is 3.08 against 1.3 for a well-pooled std). With a correlation
rho the paired test's bar is t(n-1) * sqrt(1 - rho) against the pooled
test's t(df): :func:`gain` uses the paired test only where the pair shares
three or more seeds and the correlation estimated on the command's *other*
designs makes that bar lower (estimated on the pair itself, the choice would
depend on the very differences it judges); otherwise the pooled test, which
stays valid (conservative) under a positive correlation. With the default
two seeds, every verdict is the pooled t.

Diverged seeds (a training that blew up counts at chance accuracy, what
such a model predicts) are counted the same way everywhere: in the mean, out
of the pooled variance, and listed by the caller.
"""
from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: a gain counts as resolved when P(gain > 0) is at least this: the tool's
#: one-sided error rate is 1 - RESOLVED
RESOLVED = 0.9
#: the paired test is considered from this many shared seeds on: with two,
#: its 1 degree of freedom pays only above a correlation of 0.82, which two
#: seeds per design cannot estimate (two designs' deviations then correlate
#: at exactly +1 or -1)
PAIRED_MIN_SEEDS = 3
#: ... and with the correlation estimated on at least this many other designs
PAIRED_MIN_OTHERS = 2
#: the power :func:`seeds_needed` plans for
POWER = 0.8
#: the smallest effect worth resolving that the tool plans for by default
#: (accuracy, i.e. 0.5 points)
MIN_EFFECT = 0.005


def _t():
    from scipy import (
        stats,  # lazy: scipy costs ~0.5 s at import; most commands never decide anything
    )

    return stats.t


def seed_accuracies(trial) -> list[float]:
    """The accuracies of every seed a trial was trained with (one for an
    unrepeated trial, none for an untrained one)."""
    return [float(a) for a in (trial.user_attrs.get("seed_accuracies") or [])]


def diverged_positions(trial) -> set[int]:
    """Positions in ``seed_accuracies`` of the seeds whose training diverged
    (counted at chance accuracy). Trials stored before positions were
    recorded have only ``seed_failures``: their chance values are found by
    value (what a diverged seed was counted at)."""
    attrs = trial.user_attrs
    if "diverged_seeds" in attrs:
        return {int(i) for i in attrs["diverged_seeds"]}
    failures = attrs.get("seed_failures") or []
    if not any("Diverged" in f for f in failures):
        return set()
    seeds = seed_accuracies(trial)
    chance = min(seeds) if seeds else 0.0
    return {i for i, a in enumerate(seeds) if i > 0 and a == chance}


@dataclass(frozen=True)
class SeedNoise:
    """The seed std of one evaluation, pooled over designs, with its degrees
    of freedom; ``correlation``: the estimated correlation between two
    designs' accuracies with the same seed (None where no two designs share
    seeds)."""

    std: float = 0.0
    df: int = 0
    #: the ``{seed: accuracy}`` groups it was pooled from, for :func:`gain`'s correlation estimate
    groups: tuple = field(default=(), repr=False, compare=False)

    @functools.cached_property
    def correlation(self) -> float | None:
        """The correlation of two designs' accuracies with the same seed,
        pooled over every pair of its groups (computed when asked: it is
        quadratic in the designs)."""
        return _seed_correlation(list(self.groups))

    @property
    def known(self) -> bool:
        return self.std > 0 and self.df >= 1

    def __float__(self) -> float:
        return self.std

    def __format__(self, spec: str) -> str:  # prints as the std, as the float it replaced did
        return format(self.std, spec)


#: no estimate yet
UNKNOWN = SeedNoise()


def as_noise(noise: SeedNoise | float) -> SeedNoise:
    """``noise`` as a :class:`SeedNoise`: a bare float is a std with unknown
    degrees of freedom, taken as a normal (only for callers that estimated it
    from very many seeds); 0 or less is no estimate."""
    if isinstance(noise, SeedNoise):
        return noise
    return SeedNoise(float(noise), 10**6) if noise and noise > 0 else UNKNOWN


def pooled_noise(groups: Iterable[Sequence[float] | Mapping[int, float]]) -> SeedNoise:
    """The seed std pooled over ``groups`` (one per design: its stable seeds'
    accuracies, a list, or ``{seed: accuracy}`` to let shared seeds
    estimate a correlation): sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)),
    with sum (n_i - 1) degrees of freedom. Unknown while fewer than two
    groups have two or more seeds."""
    groups = [g for g in groups if len(g) > 1]
    if len(groups) < 2:
        return UNKNOWN
    values = [list(g.values()) if isinstance(g, Mapping) else list(g) for g in groups]
    df = sum(len(v) - 1 for v in values)
    ss = sum((len(v) - 1) * statistics.variance(v) for v in values)
    keyed = tuple(dict(g) for g in groups if isinstance(g, Mapping))
    return SeedNoise(math.sqrt(ss / df), df, keyed)


def _seed_correlation(groups: list[Mapping[int, float]]) -> float | None:
    """The correlation of two designs' deviations from their own means on
    the seeds they share, pooled over every pair of designs (the sum of
    cross-products over the square root of the products of sums of
    squares)."""
    num = den = 0.0
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            shared = sorted(set(a) & set(b))
            if len(shared) < 2:
                continue
            ma = statistics.fmean(a[s] for s in shared)
            mb = statistics.fmean(b[s] for s in shared)
            ra = [a[s] - ma for s in shared]
            rb = [b[s] - mb for s in shared]
            num += sum(x * y for x, y in zip(ra, rb))
            den += math.sqrt(sum(x * x for x in ra) * sum(y * y for y in rb))
    return num / den if den > 0 else None


def pooled_seed_std(trials: Sequence) -> float:
    """The pooled seed std (:func:`pooled_noise`) of trials' stable seeds."""
    return trial_noise(trials).std


def trial_noise(trials: Sequence) -> SeedNoise:
    """:func:`pooled_noise` over trials (their stable seed accuracies, keyed
    by seed where the trial records its seeds)."""
    groups = []
    for t in trials:
        accuracies, out, seeds = seed_accuracies(t), diverged_positions(t), t.user_attrs.get("seeds")
        keys = [int(s) for s in seeds] if seeds and len(seeds) == len(accuracies) else None
        kept = [i for i in range(len(accuracies)) if i not in out]
        groups.append({keys[i]: accuracies[i] for i in kept} if keys else [accuracies[i] for i in kept])
    return pooled_noise(groups)


@dataclass(frozen=True)
class Gain:
    """``higher``'s mean accuracy minus ``lower``'s: the difference, its
    standard error, degrees of freedom and P(gain > 0) (None where one seed
    or no known std leaves them unknown), and which test gave them."""

    delta: float
    se: float | None = None
    df: int | None = None
    probability: float | None = None
    test: str = "unknown"

    def resolved(self, level: float = RESOLVED) -> bool:
        return self.probability is not None and self.probability >= level


def gain(higher: Sequence[float], lower: Sequence[float], noise: SeedNoise | float, *,
         higher_seeds: Sequence[int] | None = None, lower_seeds: Sequence[int] | None = None,
         level: float = RESOLVED) -> Gain:
    """The one decision function: is ``higher``'s mean accuracy really above
    ``lower``'s? Pooled t (the std of ``noise``, its degrees of freedom);
    paired t on the per-seed differences instead where both were trained
    with the same seeds (``*_seeds``), none diverged, and the correlation of
    ``noise`` makes the paired bar at ``level`` lower (module docstring).
    A bare float ``noise`` is read by :func:`as_noise`."""
    if not len(higher) or not len(lower):
        raise ValueError("gain needs at least one accuracy on each side")
    delta = statistics.fmean(higher) - statistics.fmean(lower)
    noise = as_noise(noise)
    n = len(higher)
    paired = (higher_seeds is not None and lower_seeds is not None and list(higher_seeds) == list(lower_seeds)
              and len(higher_seeds) == n == len(lower) and n >= PAIRED_MIN_SEEDS and noise.known)
    if paired:
        # the correlation from the *other* designs only: estimated on the pair itself, the choice of test
        # would depend on the very differences it judges (with two designs and two seeds the estimate is
        # +1 exactly when both moved the same way, which is when the paired std is smallest)
        pair = ({int(s): a for s, a in zip(higher_seeds, higher)}, {int(s): a for s, a in zip(lower_seeds, lower)})
        others = [g for g in noise.groups if g not in pair]
        rho = _seed_correlation(others) if len(others) >= PAIRED_MIN_OTHERS else None
        t = _t()
        paired = rho is not None and t.ppf(level, n - 1) * math.sqrt(max(0.0, 1 - rho)) < t.ppf(level, noise.df)
    if paired:
        diffs = [a - b for a, b in zip(higher, lower)]
        sd = statistics.stdev(diffs)
        if sd > 0:
            se = sd / math.sqrt(n)
            return Gain(delta, se, n - 1, float(_t().cdf(delta / se, n - 1)), "paired t")
    if not noise.known:
        return Gain(delta)
    se = noise.std * math.sqrt(1 / len(higher) + 1 / len(lower))
    return Gain(delta, se, noise.df, float(_t().cdf(delta / se, noise.df)), "pooled t")


def dominance_probability(higher: Sequence[float], lower: Sequence[float], noise: SeedNoise | float) -> float | None:
    """P(gain > 0) of :func:`gain` (None when unknown)."""
    return gain(higher, lower, noise).probability


def bonferroni(designs: int, level: float = RESOLVED) -> float:
    """The P(gain > 0) the best of ``designs`` must reach to count at the
    tool's error rate: 1 - (1 - level) / designs."""
    return 1 - (1 - level) / max(1, designs)


@dataclass(frozen=True)
class Verdict:
    """Does the best of several designs beat the baseline beyond noise?
    ``best``: the index of the most accurate design; ``gain`` its gain over
    the baseline; ``bar``: the P(gain > 0) it must reach (Bonferroni over
    the designs); ``beats``: it does."""

    best: int
    gain: Gain
    bar: float

    @property
    def beats(self) -> bool:
        return self.gain.resolved(self.bar)


def judge_best(designs: Sequence[Sequence[float]], baseline: Sequence[float], noise: SeedNoise, *,
               seeds: Sequence[Sequence[int] | None] | None = None, baseline_seeds: Sequence[int] | None = None,
               level: float = RESOLVED) -> Verdict:
    """The verdict of ``promote`` (and of benchmarks/null_rate.py, which
    measures its error rate): the design with the highest mean accuracy is
    tested against the baseline with :func:`gain` at the Bonferroni bar
    1 - (1 - level) / K, K = the number of designs: picking the best of K
    and testing it once at ``level`` would call a null effect a win far more
    often than 1 - level."""
    if not designs:
        raise ValueError("judge_best needs at least one design")
    best = max(range(len(designs)), key=lambda i: statistics.fmean(designs[i]))
    g = gain(designs[best], baseline, noise, higher_seeds=None if seeds is None else seeds[best],
             lower_seeds=baseline_seeds)
    return Verdict(best, g, bonferroni(len(designs), level))


def seeds_needed(effect: float, std: float, level: float = RESOLVED, power: float = POWER, arms: int = 2,
                 max_seeds: int = 64) -> int | None:
    """Seeds per arm for a one-sided pooled t test at ``level`` to detect a
    true gain of ``effect`` with probability ``power``, the std pooled over
    ``arms`` designs trained with as many seeds (arms * (n - 1) degrees of
    freedom); None above ``max_seeds`` (or no std: nothing to plan with)."""
    if not std > 0 or not effect > 0:
        return None
    from scipy import (
        stats,  # lazy: scipy costs ~0.5 s at import; most commands never decide anything
    )

    for n in range(2, max_seeds + 1):
        df = max(1, arms * (n - 1))
        ncp = effect / (std * math.sqrt(2 / n))
        if stats.nct.sf(stats.t.ppf(level, df), df, ncp) >= power:
            return n
    return None


def what_it_would_take(observed: float, noise: SeedNoise, level: float = RESOLVED, arms: int = 2,
                       min_effect: float = MIN_EFFECT) -> str:
    """One line for a verdict "within noise": the seeds per arm that would
    resolve a gain of the observed size, and of ``min_effect``, at this
    std, ``level`` and 80 % power."""
    if not noise.known:
        return "the seed std is not known yet: train 2+ seeds of 2+ designs"
    parts = []
    for what, effect in ((f"the observed {abs(observed) * 100:.2f} points", abs(observed)),
                         (f"{min_effect * 100:g} points", min_effect)):
        n = seeds_needed(effect, noise.std, level, arms=arms)
        parts.append(f"{what}: {n if n is not None else 'over 64'} seeds per arm")
    return (f"to resolve a gain at P >= {level:.3g} with {POWER:.0%} power (seed std {noise.std:.4f}): "
            + "; ".join(parts))


def near_front(point: Sequence[float], others: Sequence[Sequence[float]], noise: float) -> bool:
    """True unless some (accuracy, cost, ...) of ``others`` dominates
    ``point`` by more than ``noise`` in accuracy: no cost higher, at least
    ``noise`` more accurate, strictly better in one objective. Every cost
    objective counts (MACs or latency, and a declared third)."""
    accuracy, costs = point[0], tuple(point[1:])
    for other in others:
        a, c = other[0], tuple(other[1:])
        if all(x <= y for x, y in zip(c, costs)) and a >= accuracy + noise and (
                any(x < y for x, y in zip(c, costs)) or a > accuracy + noise):
            return False
    return True


# --------------------------------------------------------------------------- a search's selection evidence


def selecting_accuracy(trial) -> float:
    """The accuracy a search selected ``trial`` on: its first seed (what every
    trial has and what decided whether it got more seeds); a promoted
    summary's mean (promote trains fresh seeds: nothing there was selected
    before)."""
    seeds = seed_accuracies(trial)
    if trial.user_attrs.get("kind") == "promoted" or not seeds:
        return float(trial.values[0])
    return seeds[0]


def confirming_accuracies(trial) -> list[float]:
    """The seeds drawn after the search selected ``trial`` (its further
    seeds; a promoted summary's every seed): free of the selection's bias.
    Empty for a trial the search trained once."""
    seeds = seed_accuracies(trial)
    if trial.user_attrs.get("kind") == "promoted":
        return seeds
    return seeds[1:]


def confirming_seeds(trial) -> list[int] | None:
    seeds = trial.user_attrs.get("seeds")
    if not seeds or len(seeds) != len(seed_accuracies(trial)):
        return None
    return [int(s) for s in (seeds if trial.user_attrs.get("kind") == "promoted" else seeds[1:])]


def shown_accuracies(trial) -> tuple[list[float], bool]:
    """The accuracies a report shows for ``trial`` and whether they are
    free of the search's selection: its confirming seeds where it has any,
    else its selecting seed (biased upwards on a front: the column says so)."""
    confirming = confirming_accuracies(trial)
    if confirming:
        return confirming, True
    return [selecting_accuracy(trial)], False


def front_gain(higher, lower, noise: SeedNoise) -> Gain:
    """:func:`gain` of two trials of a study on their confirming seeds (None
    of it where either has none: then a gain cannot be judged free of the
    selection)."""
    a, b = confirming_accuracies(higher), confirming_accuracies(lower)
    if not a or not b:
        shown = shown_accuracies(higher)[0], shown_accuracies(lower)[0]
        return Gain(statistics.fmean(shown[0]) - statistics.fmean(shown[1]))
    return gain(a, b, noise, higher_seeds=confirming_seeds(higher), lower_seeds=confirming_seeds(lower))


def neighbour_marks(front: Sequence, noise: SeedNoise | float) -> list[str]:
    """For a front sorted by cost, one mark per point on its step up from
    the cheaper neighbour, judged on the seeds drawn after selection
    (:func:`front_gain`): ``""`` (the first point, or a gain resolved at
    :data:`RESOLVED`), ``"~N"`` (within noise of trial N), or ``"?"``
    (either point lacks confirming seeds, or no seed std is known yet)."""
    noise = as_noise(noise)
    marks = [""] * len(front)
    for i in range(1, len(front)):
        g = front_gain(front[i], front[i - 1], noise)
        if g.probability is None:
            marks[i] = "?"
        elif g.probability < RESOLVED:
            marks[i] = f"~{front[i - 1].number}"
    return marks


def marks_legend(noise: SeedNoise | float) -> str:
    """The line under a front table that explains its noise marks."""
    std = float(noise)
    df = f", {noise.df} df" if isinstance(noise, SeedNoise) and noise.known else ""
    known = f"pooled seed std {std:.4f}{df}" if std > 0 else "no seed std known yet"
    return (f"noise: ~N = more cost than front neighbour trial N for an accuracy gain the seeds drawn after "
            f"selection do not resolve (t-based P(gain > 0) < {RESOLVED:g}, {known}); ? = no seed after "
            f"selection on one side, or noise unknown")
