"""``python search.py calibrate``: how well does a space's proxy fidelity
rank architectures, before anyone spends a day searching with it?
(docs/design.md section 6a)

A sample of the space's architectures (or the user's own configs) is
trained with several seeds at the space's fidelity and at a longer
reference budget; zero-cost scores are computed at initialisation. Each
training is one stored evaluation (:mod:`nas.training.evaluate`) in the study
``calibrate:<space>``, so an interrupted run resumes where it stopped,
several runs with other fidelities (``--epochs``, ``--subset``) add up,
and optuna-dashboard shows them. The analysis then compares every
fidelity measured for this sample, each rung of it, and every zero-cost
score against the reference's seed means:

* Kendall tau (tau-b, ties handled) and Spearman rho, from scipy;
* tau with 1..S seeds averaged (the mean over every choice of k of the S
  seeds), so the number of seeds a front point needs is measured too, each
  with a percentile bootstrap interval (:data:`INTERVAL`) over architectures
  resampled in pairs (:func:`seeds_intervals`; seeded, so the same data
  print the same intervals);
* the pooled seed std, and whether the reference's best architecture is in
  the fidelity's top 3;
* the reference's agreement with itself (:func:`self_agreement`, tau
  between its seeds) and what that bounds (:func:`tau_ceiling`): a proxy's
  tau against the mean of the reference's S seeds cannot be expected above
  that of a noise-free proxy, 2/pi asin(sqrt(r_S)), where r_S = S r / (1 +
  (S - 1) r) is the Spearman-Brown reliability of the S-seed mean and r =
  sin(pi tau_self / 2) the seeds' correlation (Greiner's relation, a normal
  model); roughly, as the self-agreement is itself measured on the sample.

The rule. A (fidelity, seeds) counts only if the LOWER END of its tau
interval reaches the target, so a recommended fidelity is one whose tau is
at least the target with about 95 % confidence (one-sided, the interval
being a two-sided 90 % one), not one whose point estimate happened to cross
it; :func:`recommend` takes the cheapest of those (images per seed x
seeds). The target (:func:`choose_target`): ``--target``, or by default
min(0.7, 0.8 x the reference's self-agreement). The default derives from
the reference because a fixed 0.7 can ask more of a proxy than the
reference gives itself (two of its seeds agree at 0.571 on ``sk`` and
``mixed``), and a proxy that orders the architectures nearly as
consistently as a retraining of the reference does is as good as this
reference can tell; 0.8 of the self-agreement, not the ceiling, because the
lower end lies some 0.3 below the point estimate with 8 architectures, so a
target near the ceiling could not be shown even by a perfect proxy. With one seed the self-agreement is not measured and the
default is 0.7; with a reference whose seeds do not agree (tau <= 0) there
is no default and nothing is recommended. An explicit ``--target`` above the
self-agreement or the ceiling gets a one-line warning.

``--write`` puts the recommendation into the space file (``rungs``,
``subset``, ``val_size``, ``repeats``).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState
from scipy import stats

from ..device import configure_threads, resolve_runtime
from ..errors import NasError
from ..model.config import ArchConfig
from ..model.network import build_model
from ..model.profile import profile
from ..search.space import SearchSpace, parse_fidelity, parse_space
from ..storage.artifacts import artifact_dir
from ..storage.backends import mask_url, storage_for_search
from ..training.budget import Fidelity
from ..training.datasets import load_dataset
from ..training.evaluate import (
    EVALUATION,
    Job,
    TrainingData,
    build_seeded,
    images_at,
    load_training_data,
    open_evaluations,
    run_jobs,
)
from .zero_cost import SCORES, zero_cost_scores

#: the reference budget when none is given: 20,000 training images for 10
#: epochs with the space's recipe (one training of resnet20 takes ~13 min
#: on a 2-core AVX2 CPU in fp32, an estimate not logged in docs/measurements)
REFERENCE_SUBSET = 20000
REFERENCE_EPOCHS = 10.0
#: the two-sided coverage of the bootstrap interval over architectures
INTERVAL = 0.9
#: the reference trains with seeds seed+1000, seed+1001, ...
REFERENCE_SEED_OFFSET = 1000
#: --seeds at most (tau is averaged over every choice of k of the seeds)
MAX_SEEDS = 8
#: bootstrap resamples of each interval (the draws are seeded: see :func:`bootstrap_indices`)
RESAMPLES = 2000
#: the default target is at most this Kendall tau (the fixed default before it derived from the reference)
TARGET_CAP = 0.7
#: ... and this fraction of the reference's self-agreement (module docstring)
TARGET_FRACTION = 0.8


@dataclass
class CalibrationRun:
    space: SearchSpace
    study_name: str
    storage: str | None = None
    sample: int = 8
    #: (where it came from, config): a user's own candidates instead of a sample
    configs: list[tuple[str, ArchConfig]] | None = None
    seeds: int = 2
    reference_epochs: float = REFERENCE_EPOCHS
    reference_subset: int | None = REFERENCE_SUBSET
    #: the Kendall tau the lower end of a fidelity's interval must reach; None: derived from the
    #: reference's self-agreement (:func:`choose_target`)
    target: float | None = None
    data: str | None = None
    device: str | None = None
    precision: str = "auto"
    command: str = ""
    #: makes each training's progress hook (the CLI's status bar or periodic lines); None: silent
    progress: Callable[[], Callable[[int, int, float], None]] | None = None
    #: resume a calibration whose numerics plan was measured on another kind of machine (nas.kernels.plan)
    mix_numerics: bool = False


@dataclass
class Row:
    """One fidelity (or one rung of it) or one zero-cost score, against the
    reference."""

    name: str
    kind: str  # "budget": a fidelity's last rung; "rung": an earlier rung; "score": zero-cost
    images: int  # per seed and architecture (0 for a score)
    seed_std: float | None  # pooled over architectures, in accuracy
    taus: list[float]  # tau with k = 1..S seeds averaged
    tau_interval: tuple[float, float]  # the interval of taus[-1] (all seeds)
    rho: float
    best_in_top3: bool
    fidelity: Fidelity | None = None
    #: the interval of each of taus (k = 1..S seeds), as :func:`seeds_intervals` gives them
    tau_intervals: list[tuple[float, float]] = field(default_factory=list)

    @property
    def tau(self) -> float:
        return self.taus[-1]

    def interval(self, k: int) -> tuple[float, float]:
        """The interval of tau with ``k`` seeds averaged ((nan, nan) where
        none was computed)."""
        if len(self.tau_intervals) == len(self.taus):
            return self.tau_intervals[k - 1]
        return self.tau_interval if k == len(self.taus) else (math.nan, math.nan)


@dataclass
class Calibration:
    architectures: list[ArchConfig]
    seeds: list[int]
    reference: Fidelity
    reference_means: list[float]
    rows: list[Row]
    recommendation: tuple[Row, int] | None
    #: the target the recommendation used (None: none, the reference's seeds do not agree)
    target: float | None
    failed: list[str] = field(default_factory=list)
    #: what the analysis left out and why (a budget or rung not measured by every training)
    notes: list[str] = field(default_factory=list)
    reference_seed_std: float | None = None
    #: Kendall tau between the reference's own seeds (:func:`self_agreement`)
    reference_self_tau: float | None = None
    #: the most a proxy's tau against the reference's seed mean can be expected to reach (:func:`tau_ceiling`)
    reference_ceiling: float | None = None
    #: where the target came from, and a warning when an explicit one is above what the reference allows
    target_source: str = ""
    target_warning: str | None = None


# --------------------------------------------------------------------------- the sample


def reference_fidelity(fidelity: Fidelity, epochs: float, subset: int | None) -> Fidelity:
    """The reference budget: the space's recipe and validation split,
    trained longer on more images, in one rung."""
    return dataclasses.replace(fidelity, subset=subset, rungs=[float(epochs)], repeats=1)


def draw_sample(space: SearchSpace, n: int, num_classes: int, image_size: int, seed: int = 0,
                draws: int | None = None) -> list[ArchConfig]:
    """``n`` architectures of ``space``: the attention-free baseline, and
    ``n - 1`` others spread evenly over the MACs range of ``draws`` random,
    feasible, distinct architectures (the same sample for the same
    arguments)."""
    base = space.base_config(num_classes)
    base.input_size = image_size
    pool: dict[str, tuple[float, ArchConfig]] = {}
    sampler_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(draws or max(64, 8 * n)):
            trial = sampler_study.ask()
            cfg = space.sample(trial, num_classes=num_classes)
            cfg.input_size = image_size
            sampler_study.tell(trial, 0.0)
            key = cfg.structure_hash()
            if key in pool or key == base.structure_hash():
                continue
            cost = profile(build_model(cfg), image_size)
            if cost["macs"] > space.constraints.get("max_macs", math.inf) or \
                    cost["params"] > space.constraints.get("max_params", math.inf):
                continue
            pool[key] = (cost["macs"], cfg)
    ordered = [cfg for _, cfg in sorted(pool.values(), key=lambda p: (p[0], p[1].structure_hash()))]
    if not ordered or n < 2:
        return [base][:n]
    picks = sorted({round(i) for i in np.linspace(0, len(ordered) - 1, min(n - 1, len(ordered)))})
    return [base] + [ordered[i] for i in picks]


# --------------------------------------------------------------------------- statistics


def rank_agreement(predicted: list[float], reference: list[float]) -> tuple[float, float]:
    """(Kendall tau-b, Spearman rho) of two scorings of the same
    architectures; ties count as scipy's tau-b counts them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: nan, said in the table
        tau = stats.kendalltau(predicted, reference).statistic
        rho = stats.spearmanr(predicted, reference).statistic
    return float(tau), float(rho)


def tau_interval(predicted: list[float], reference: list[float], resamples: int = RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval (:data:`INTERVAL`) of Kendall tau
    over architectures resampled with replacement, in pairs (resamples in
    which a side is constant have no tau and are left out); the interval
    :func:`seeds_intervals` gives one seed column."""
    return seeds_intervals(np.asarray(predicted, float).reshape(-1, 1), reference, resamples, seed)[0]


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The architectures each resample draws (resamples x n), the same for
    the same arguments: the draws of scipy's paired ``bootstrap`` with
    ``rng=np.random.default_rng(seed)``, which computed these intervals
    before they were vectorised."""
    return np.random.default_rng(seed).integers(0, n, (resamples, n))


def _pair_signs(ranks: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return np.sign(ranks[:, pairs[0]] - ranks[:, pairs[1]]).astype(np.int8)


def _resampled_taus(columns: list[np.ndarray], reference: list[float], idx: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each column against ``reference`` in each resample
    ``idx`` (columns x resamples; nan where a side is constant, or where a
    column holds nan), counted over pairs as scipy's ``kendalltau`` counts
    them: (concordant - discordant) / sqrt(pairs untied in x * pairs untied
    in y), a drawn architecture paired with a copy of itself tied on both
    sides. Values are replaced by their ranks first (infinite scores order
    as scipy orders them)."""
    n = idx.shape[1]
    pairs = np.triu_indices(n, 1)
    out = np.full((len(columns), len(idx)), math.nan)
    reference = np.asarray(reference, float)
    if np.isnan(reference).any():
        return out
    ref_ranks = stats.rankdata(reference)
    col_ranks = [None if np.isnan(c).any() else stats.rankdata(c) for c in columns]
    chunk = max(1, 4_000_000 // max(1, len(pairs[0])))
    for start in range(0, len(idx), chunk):
        rows = idx[start:start + chunk]
        sy = _pair_signs(ref_ranks[rows], pairs)
        untied_y = np.abs(sy).sum(axis=1)
        for c, ranks in enumerate(col_ranks):
            if ranks is None:
                continue
            sx = _pair_signs(ranks[rows], pairs)
            denominator = np.sqrt(np.abs(sx).sum(axis=1) * untied_y.astype(float))
            with np.errstate(invalid="ignore", divide="ignore"):
                tau = (sx * sy).sum(axis=1) / denominator
            out[c, start:start + chunk] = np.where(denominator > 0, tau, math.nan)
    return out


def _percentile_interval(distribution: np.ndarray) -> tuple[float, float]:
    if np.isnan(distribution).all():
        return (math.nan, math.nan)
    tail = (1 - INTERVAL) / 2 * 100
    lo, hi = np.nanpercentile(distribution, [tail, 100 - tail])
    return float(lo), float(hi)


def seeds_intervals(per_seed: np.ndarray, reference: list[float], resamples: int = RESAMPLES,
                    seed: int = 0) -> list[tuple[float, float]]:
    """A percentile bootstrap interval (:data:`INTERVAL`) of each tau
    :func:`seeds_taus` gives (k = 1..S seeds averaged): the architectures
    (rows of ``per_seed`` with their reference value) are resampled with
    replacement, and in each resample the statistic is computed as the point
    estimate is, the mean over every choice of k seed columns of the tau of
    their mean. Every k and every row of a calibration see the same
    resamples (``seed``), so the output is reproducible and the intervals
    of one table are comparable. (nan, nan) with fewer than 3
    architectures."""
    n, s = per_seed.shape
    if n < 3:
        return [(math.nan, math.nan)] * s
    idx = bootstrap_indices(n, resamples, seed)
    intervals = []
    for k in range(1, s + 1):
        columns = [per_seed[:, list(c)].mean(axis=1) for c in itertools.combinations(range(s), k)]
        taus = _resampled_taus(columns, reference, idx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resample with no tau in any choice: nan, left out
            distribution = np.nanmean(taus, axis=0)
        intervals.append(_percentile_interval(distribution))
    return intervals


def seeds_taus(per_seed: np.ndarray, reference: list[float]) -> list[float]:
    """Kendall tau against ``reference`` of the mean over k seeds, for k =
    1..S, each the average over every choice of k of the S seed columns of
    ``per_seed`` (architectures x seeds)."""
    s = per_seed.shape[1]
    taus = []
    for k in range(1, s + 1):
        values = [rank_agreement(list(per_seed[:, list(c)].mean(axis=1)), reference)[0]
                  for c in itertools.combinations(range(s), k)]
        taus.append(float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else math.nan)
    return taus


def self_agreement(per_seed: np.ndarray) -> float | None:
    """Kendall tau between the rankings two seeds of the same budget give,
    averaged over every pair of seed columns (None with one seed). For the
    reference this is how far its own order is from seed noise: with ranked
    differences of the order of its seed std it is well below 1, and the
    same noise limits how well any fidelity can agree with the reference."""
    pairs = list(itertools.combinations(range(per_seed.shape[1]), 2))
    if not pairs:
        return None
    values = [rank_agreement(list(per_seed[:, i]), list(per_seed[:, j]))[0] for i, j in pairs]
    return None if all(math.isnan(v) for v in values) else float(np.nanmean(values))


def tau_ceiling(self_tau: float | None, seeds: int) -> float | None:
    """The Kendall tau a noise-free proxy would reach against the mean of
    ``seeds`` reference seeds whose pairs agree at ``self_tau``: no proxy
    can be expected above it. Under a normal model a tau is a correlation r
    = sin(pi tau / 2) (Greiner's relation); the mean of S seeds has the
    Spearman-Brown reliability r_S = S r / (1 + (S - 1) r), and what is
    free of noise correlates with it at sqrt(r_S): the ceiling is 2/pi
    asin(sqrt(r_S)). With one seed (r_S = r) it is 2/pi asin(sqrt(r)),
    above ``self_tau`` itself: a second seed of the reference is noisy too.
    None when ``self_tau`` is (one seed); 0 when the seeds do not agree."""
    if self_tau is None or math.isnan(self_tau):
        return None
    if self_tau <= 0:
        return 0.0
    r = math.sin(math.pi * min(self_tau, 1.0) / 2)
    r_mean = seeds * r / (1 + (seeds - 1) * r)
    return 2 / math.pi * math.asin(math.sqrt(r_mean))


@dataclass
class Target:
    value: float | None  # None: nothing can be recommended
    source: str  # where it came from, as printed
    warning: str | None = None


def choose_target(target: float | None, self_tau: float | None, seeds: int) -> Target:
    """The target the lower end of an interval must reach. ``target`` None
    (the default): min(:data:`TARGET_CAP`, :data:`TARGET_FRACTION` x the
    reference's self-agreement), so that the default never asks of a proxy
    more than a second reference training gives (module docstring); 0.7
    when the self-agreement is not measured (one seed); none when the
    reference's seeds do not agree (its order is seed noise). An explicit
    target above the self-agreement gets a warning, one that says so when it
    is above the ceiling (:func:`tau_ceiling`) too."""
    ceiling = tau_ceiling(self_tau, seeds)
    if target is None:
        if self_tau is None or math.isnan(self_tau):
            return Target(TARGET_CAP, f"auto: {TARGET_CAP:g}, the reference's self-agreement is not measured with "
                                      f"one seed (--seeds 2 measures it)")
        if self_tau <= 0:
            return Target(None, f"auto: none, the reference's seeds do not agree (tau between them "
                                f"{self_tau:+.3f}): its order is seed noise at this budget, and nothing can be "
                                f"calibrated against it; train it longer (--reference-epochs) or give it more seeds")
        value = min(TARGET_CAP, TARGET_FRACTION * self_tau)
        how = f"{TARGET_FRACTION:g} x the reference's self-agreement {self_tau:+.3f}"
        return Target(value, f"auto: {how}" + (f", capped at {TARGET_CAP:g}" if value == TARGET_CAP else ""))
    result = Target(target, "--target")
    if ceiling is not None and target > ceiling:
        result.warning = (f"--target {target:g} is above {ceiling:+.3f}, the most a noise-free proxy could reach "
                          f"against this reference's mean of {seeds} seed(s): no fidelity can be expected to reach "
                          f"it (more reference seeds or a longer reference raise that ceiling)")
    elif self_tau is not None and not math.isnan(self_tau) and target > self_tau:
        result.warning = (f"--target {target:g} is above the reference's agreement with itself ({self_tau:+.3f} "
                          f"between its seeds): a proxy must order the architectures more like the reference's "
                          f"mean than one reference seed orders them like another, and show it at its interval's "
                          f"lower end (the ceiling is {ceiling:+.3f})")
    return result


def pooled_std(per_seed: np.ndarray) -> float | None:
    """The square root of the mean over architectures of the seeds'
    sample variance (None with one seed)."""
    if per_seed.shape[1] < 2:
        return None
    return float(math.sqrt(np.mean(per_seed.var(axis=1, ddof=1))))


def make_row(name: str, kind: str, images: int, per_seed: np.ndarray, reference: list[float],
             fidelity: Fidelity | None = None, accuracy_units: bool = True) -> Row:
    means = list(per_seed.mean(axis=1))
    _, rho = rank_agreement(means, reference)
    best = int(np.argmax(reference))
    top3 = set(np.argsort(-np.asarray(means), kind="stable")[:3].tolist())
    intervals = seeds_intervals(per_seed, reference)
    return Row(name, kind, images, pooled_std(per_seed) if accuracy_units else None,
               seeds_taus(per_seed, reference), intervals[-1], rho, best in top3, fidelity, intervals)


def candidates(rows: list[Row]) -> list[tuple[int, Row, int]]:
    """Every (fidelity, seeds) a recommendation can be, cheapest first:
    (images per front candidate, row, seeds). Only whole budgets qualify (an
    earlier rung is a point inside another schedule)."""
    options = [(row.images * k, i, row, k) for i, row in enumerate(rows) if row.kind == "budget"
               for k in range(1, len(row.taus) + 1)]
    return [(cost, row, k) for cost, _, row, k in sorted(options, key=lambda o: o[:2])]


def recommend(rows: list[Row], target: float | None) -> tuple[Row, int] | None:
    """The cheapest (fidelity, seeds) whose tau is shown to reach
    ``target``: the LOWER END of its interval (:meth:`Row.interval`) reaches
    it; a point estimate that crosses it while its interval reaches below
    does not count. Cost = images per seed x seeds; among equal costs the
    higher lower end. None when nothing qualifies, or ``target`` is None."""
    if target is None:
        return None
    options = [(cost, -row.interval(k)[0], i, row, k) for i, (cost, row, k) in enumerate(candidates(rows))
               if not math.isnan(row.interval(k)[0]) and row.interval(k)[0] >= target]
    if not options:
        return None
    _, _, _, row, k = min(options, key=lambda o: o[:3])
    return row, k


# --------------------------------------------------------------------------- the run


def open_calibration(run: CalibrationRun, fingerprint: str) -> tuple[optuna.Study, str]:
    url = storage_for_search(run.storage, run.study_name, 1)
    study = open_evaluations(run.study_name, url, "calibrate", "a calibration", "--study", None, fingerprint,
                             attrs={"space_name": run.space.name}, command=run.command,
                             mix_numerics=run.mix_numerics)
    return study, url


def run_calibration(run: CalibrationRun, out: Callable[[str], None] = print) -> Calibration:
    """Train what is missing, then analyse everything stored for the sample."""

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    runtime = resolve_runtime(run.device, run.precision)
    threads = configure_threads()
    f = run.space.fidelity
    images = load_dataset(f.dataset, run.data)
    fidelity_data = load_training_data(f, images=images)
    available = len(fidelity_data.train_labels) if f.subset is None else \
        len(images.train_labels) - len(fidelity_data.val_labels)
    if run.reference_subset is not None and run.reference_subset > available:
        raise NasError(f"--reference-subset: {run.reference_subset} is more than the {available} training images "
                       f"left after the validation split (0: all of them)")
    reference = reference_fidelity(f, run.reference_epochs, run.reference_subset)
    reference_data = load_training_data(reference, images=images)
    n_fid, n_ref = len(fidelity_data.train_labels), len(reference_data.train_labels)
    if n_ref * reference.epochs <= n_fid * f.epochs:
        raise NasError(f"--reference-epochs/--reference-subset: the reference ({n_ref} images x {reference.epochs:g} "
                       f"epochs) must train on more than the fidelity ({n_fid} images x {f.epochs:g} epochs)")
    if run.configs is not None:
        architectures = _checked_configs(run.configs, fidelity_data)
    else:
        architectures = draw_sample(run.space, run.sample, fidelity_data.num_classes, fidelity_data.image_size)
        if len(architectures) < 2:
            raise NasError(f"space {run.space.name!r}: no feasible architecture besides the baseline was found; "
                           f"nothing to rank")
        if len(architectures) < run.sample:
            out(f"note: the space has {len(architectures)} distinct feasible architectures in the draws, "
                f"fewer than --sample {run.sample}")
    seeds = [f.seed + i for i in range(run.seeds)]
    # the reference's own seeds: with the fidelity's, a lucky initialisation
    # would lift both and flatter the agreement
    reference_seeds = [f.seed + REFERENCE_SEED_OFFSET + i for i in range(run.seeds)]
    study, url = open_calibration(run, images.fingerprint)

    def job(cfg: ArchConfig, budget: Fidelity, data: TrainingData, seed: int, role: str) -> Job:
        return Job(cfg, seed, role, f"{role:<9} {cfg.structure_hash()[:8]}", budget=budget, data=data)

    jobs = [job(cfg, f, fidelity_data, s, "fidelity") for cfg in architectures for s in seeds]
    jobs += [job(cfg, reference, reference_data, s, "reference") for cfg in architectures for s in reference_seeds]
    out(f"calibrate {run.space.name!r} in study {run.study_name!r} ({mask_url(url)}): {len(architectures)} "
        f"architectures x {len(seeds)} seeds; fidelity {n_fid} images x {f.epochs:g} epochs "
        f"(rungs {', '.join(f'{r:g}' for r in f.rungs)}), reference {n_ref} images x {reference.epochs:g} epochs, "
        f"{len(fidelity_data.val_labels)} validation images; {runtime.device} {runtime.precision}, {threads} threads")

    # a half-done reference training continues from its last epoch boundary
    _, failures = run_jobs(study, jobs, None, None, runtime, out, state_dir=artifact_dir(url).parent / "train-states",
                           progress=run.progress)
    failed = [f"{j.cfg.structure_hash()[:8]} seed {j.seed} ({j.role}): {reason}" for j, reason in failures]
    if failed:  # an architecture that cannot be trained at some budget has no place in the ranking
        bad = {line.split()[0] for line in failed}
        architectures = [cfg for cfg in architectures if cfg.structure_hash()[:8] not in bad]
        out(f"left out of the analysis: {', '.join(sorted(bad))} (a training failed, see below)")
        if len(architectures) < 2:
            raise NasError(f"{len(bad)} architecture(s) failed to train; fewer than 2 left to rank")
    result = analyse(study, architectures, seeds, reference_seeds, reference, fidelity_data, runtime, run.target)
    result.failed = failed
    return result


def _checked_configs(configs: list[tuple[str, ArchConfig]], data: TrainingData) -> list[ArchConfig]:
    unique: dict[str, ArchConfig] = {}
    for source, cfg in configs:
        if cfg.num_classes != data.num_classes:
            raise NasError(f"--configs: {source} has num_classes {cfg.num_classes}, the data {data.num_classes}")
        if cfg.input_size != data.image_size:
            raise NasError(f"--configs: {source} has input_size {cfg.input_size}, the images are "
                           f"{data.image_size}x{data.image_size}")
        unique.setdefault(cfg.structure_hash(), cfg)
    if len(unique) < 2:
        raise NasError(f"--configs: {len(unique)} distinct architecture(s); a ranking needs at least 2")
    return list(unique.values())


def analyse(study: optuna.Study, architectures: list[ArchConfig], seeds: list[int], reference_seeds: list[int],
            reference: Fidelity, data: TrainingData, runtime, target: float | None) -> Calibration:
    """Rows for every budget stored for all of these architectures and
    seeds (the space's fidelity, and any other calibrated before), their
    rungs, and the zero-cost scores; the target (``target``, or None: from
    the reference's self-agreement) and the recommendation."""
    index = {cfg.structure_hash(): i for i, cfg in enumerate(architectures)}
    reference_key = reference.budget_key()
    by_budget: dict[str, dict] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if a.get("kind") != EVALUATION or a.get("structure_hash") not in index:
            continue
        wanted = reference_seeds if a["budget_key"] == reference_key else seeds
        if a.get("seed") not in wanted:
            continue
        entry = by_budget.setdefault(a["budget_key"], {"budget": a["budget"], "train_images": a["train_images"],
                                                        "cells": {}})
        entry["cells"][(index[a["structure_hash"]], wanted.index(a["seed"]))] = a.get("rungs") or []
    complete = len(architectures) * len(seeds)
    ref_entry = by_budget.pop(reference_key, None)
    if ref_entry is None or len(ref_entry["cells"]) < complete:
        have = 0 if ref_entry is None else len(ref_entry["cells"])
        raise NasError(f"the reference has {have} of {complete} trainings; run calibrate again to finish them")
    ref_epochs, _ = _rung_epochs(ref_entry["cells"])
    if not ref_epochs:
        raise NasError("the reference's trainings end at different epochs; they are not one budget")
    ref_per_seed = _matrix(ref_entry["cells"], len(architectures), len(seeds), ref_epochs[-1])
    ref_means = list(ref_per_seed.mean(axis=1))

    rows: list[Row] = []
    notes: list[str] = []
    for entry in sorted(by_budget.values(), key=_budget_cost):
        if len(entry["cells"]) < complete:
            continue  # another sample's budget, or one not finished
        budget = parse_fidelity(entry["budget"])
        n = entry["train_images"]
        epochs_measured, partial = _rung_epochs(entry["cells"])
        for epochs, count in partial:
            notes.append(f"{_size(n)} x {budget.epochs:g} ep: its rung at {_nominal(epochs, budget):g} epochs was "
                         f"recorded by {count} of {complete} trainings (a training resumed before rungs survived a "
                         f"resume): row left out")
        if not epochs_measured:
            notes.append(f"{_size(n)} x {budget.epochs:g} ep: its trainings end at different epochs: left out")
            continue
        for epochs in epochs_measured:  # the rungs the trainer measured (rungs closer than a step merge)
            last = epochs == epochs_measured[-1]
            name = f"{_size(n)} x {_nominal(epochs, budget):g} ep" + ("" if last else f" (rung of {budget.epochs:g})")
            rows.append(make_row(name, "budget" if last else "rung", images_at(epochs, n, budget.batch_size),
                                 _matrix(entry["cells"], len(architectures), len(seeds), epochs), ref_means,
                                 budget if last else None))
    scores = _zero_cost(architectures, seeds, data, runtime)
    for name in SCORES:
        rows.append(make_row(name, "score", 0, scores[name], ref_means, accuracy_units=False))
    self_tau = self_agreement(ref_per_seed)
    chosen = choose_target(target, self_tau, len(seeds))
    return Calibration(architectures, seeds, reference, ref_means, rows, recommend(rows, chosen.value), chosen.value,
                       notes=notes, reference_seed_std=pooled_std(ref_per_seed), reference_self_tau=self_tau,
                       reference_ceiling=tau_ceiling(self_tau, len(seeds)), target_source=chosen.source,
                       target_warning=chosen.warning)


def _rung_epochs(cells: dict) -> tuple[list[float], list[tuple[float, int]]]:
    """The epochs at which every training of a budget measured accuracy
    (empty when they do not all end at the same epoch), and (epochs, how
    many measured it) for a rung that only some of them recorded."""
    measured = [[e for e, _ in rungs] for rungs in cells.values()]
    if not measured or any(not m for m in measured) or len({m[-1] for m in measured}) != 1:
        return [], []
    common = sorted(set.intersection(*(set(m) for m in measured)))
    partial = sorted({e for m in measured for e in m} - set(common))
    return common, [(e, sum(e in m for m in measured)) for e in partial]


def _nominal(epochs: float, budget: Fidelity) -> float:
    """The space's rung that a measured epoch count stands for (the trainer
    stops on whole batches: a rung of 1 epoch is measured at 1.0112)."""
    return min(budget.rungs, key=lambda r: abs(r - epochs))


def _matrix(cells: dict, n_arch: int, n_seeds: int, epochs: float) -> np.ndarray:
    out = np.full((n_arch, n_seeds), math.nan)
    for (i, s), rungs in cells.items():
        out[i, s] = next(acc for e, acc in rungs if e == epochs)
    return out


def _budget_cost(entry: dict) -> tuple:
    budget = entry["budget"]
    return (images_at(budget["rungs"][-1], entry["train_images"], budget["batch_size"]), str(budget))


def _size(n: int) -> str:
    return f"{n / 1000:g}k" if n % 100 == 0 and n >= 1000 else str(n)


def _zero_cost(architectures: list[ArchConfig], seeds: list[int], data: TrainingData, runtime) -> dict:
    out = {name: np.empty((len(architectures), len(seeds))) for name in SCORES}
    for i, cfg in enumerate(architectures):
        for j, seed in enumerate(seeds):
            model = build_seeded(cfg, seed, runtime)
            cost = profile(model, data.image_size, device=runtime.device)
            scores = zero_cost_scores(model, data.train_images, data.train_labels, data.mean, data.std, cost,
                                      seed=seed)
            for name, value in scores.items():
                out[name][i, j] = value
    return out


# --------------------------------------------------------------------------- output


def _interval_text(interval: tuple[float, float]) -> str:
    lo, hi = interval
    return "" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"


def format_calibration(result: Calibration) -> str:
    s = len(result.seeds)
    ks = [1, s] if s > 1 else [1]
    span = f"{INTERVAL:.0%} interval"
    head = f"{'fidelity / score':<26} {'images/seed':>11} {'seed std':>8}" + "".join(
        f" {f'tau {k} seed' + ('s' if k > 1 else ''):>12} {span:>14}" for k in ks) + f" {'rho':>6}  ref best in top 3"
    lines = [f"reference: {result.reference.subset or 'all'} images x {result.reference.epochs:g} epochs, mean of "
             f"{s} seed(s); reference accuracies " + ", ".join(f"{m:.4f}" for m in result.reference_means)]
    if result.reference_self_tau is not None:
        lines.append(f"the reference against itself: seed std {result.reference_seed_std:.4f}, tau between its "
                     f"seeds {result.reference_self_tau:+.3f} (self-agreement: a second reference training orders "
                     f"the architectures that much like the first); it bounds a fidelity's tau against the "
                     f"reference's mean of {s} seeds at about {result.reference_ceiling:+.3f} (what a noise-free "
                     f"proxy would reach: the seeds' agreement as a correlation, Spearman-Brown for their mean)")
    else:
        lines.append("the reference against itself: not measured with one seed (--seeds 2 measures it), so no "
                     "bound on a fidelity's tau is known")
    if result.target is None:
        lines.append(f"target: none ({result.target_source})")
    else:
        lines.append(f"target: {result.target:+.3f} ({result.target_source}); a (fidelity, repeats) counts only if "
                     f"the lower end of its {span} of tau reaches it")
    if result.target_warning:
        lines.append(f"warning: {result.target_warning}")
    lines.append(head)
    for row in result.rows:
        taus = "".join(f" {row.taus[k - 1]:>+12.3f} {_interval_text(row.interval(k)):>14}" for k in ks)
        lines.append(f"{row.name:<26} {row.images:>11,} {'' if row.seed_std is None else f'{row.seed_std:.4f}':>8}"
                     f"{taus} {row.rho:>+6.3f}  {'yes' if row.best_in_top3 else 'no'}")
    options = candidates(result.rows)
    if options:
        reaches = "" if result.target is None else f"lower end >= {result.target:+.3f}"
        lines.append("the (fidelity, repeats) a recommendation can be, cheapest first:")
        lines.append(f"  {'fidelity':<26} {'repeats':>7} {'images/candidate':>16} {'tau':>7} {span:>14}  {reaches}")
        for cost, row, k in options:
            lo = row.interval(k)[0]
            verdict = "" if result.target is None else (
                "yes" if not math.isnan(lo) and lo >= result.target else "no")
            lines.append(f"  {row.name:<26} {k:>7} {cost:>16,} {row.taus[k - 1]:>+7.3f} "
                         f"{_interval_text(row.interval(k)):>14}  {verdict}")
    if result.recommendation is not None:
        row, k = result.recommendation
        lo, hi = row.interval(k)
        lines.append(f"recommendation: {row.name} with repeats {k}: the lower end of its {span} of tau, {lo:+.3f}, "
                     f"reaches the target {result.target:+.3f} (tau {row.taus[k - 1]:+.3f} [{lo:+.2f}, {hi:+.2f}]; "
                     f"{row.images * k:,} images per front candidate)")
    elif result.target is None:
        lines.append("recommendation: none (no target: the reference's order is seed noise)")
    else:
        lines.append(f"recommendation: none: no fidelity measured here, with up to {s} seed(s), has the lower end of "
                     f"its {span} of tau at or above the target {result.target:+.3f}")
        measured = [(row.interval(k)[0], -cost, row, k) for cost, row, k in options
                    if not math.isnan(row.interval(k)[0])]
        if measured:
            lo, _, row, k = max(measured, key=lambda m: m[:2])
            lines.append(f"closest: {row.name} with repeats {k} (lower end {lo:+.3f}; tau {row.taus[k - 1]:+.3f} "
                         f"{_interval_text(row.interval(k))}; {row.images * k:,} images per front candidate)")
        crossing = [f"{row.name} with repeats {k}" for _, row, k in options
                    if not math.isnan(row.taus[k - 1]) and row.taus[k - 1] >= result.target]
        if crossing:
            lines.append(f"tau reaches the target at its point estimate only ({'; '.join(crossing)}): with "
                         f"{len(result.architectures)} architectures the intervals are wide; more of them "
                         f"(--sample, --configs) narrow the intervals")
        elif options:
            lines.append("try a longer fidelity (--epochs, --subset) or more seeds")
    for failure in result.failed:
        lines.append(f"failed: {failure}")
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- --write


def write_fidelity(space: SearchSpace, row: Row, repeats: int, note: str) -> Path:
    """Put the recommended budget and repeats into the space's file, as a
    one-line ``fidelity:`` mapping under a ``# calibrated ...`` comment; the
    other keys of the fidelity and the rest of the file (comments, blank
    lines) stay as they were."""

    path = writable_space_file(space)
    text = path.read_text()
    budget = row.fidelity
    root = yaml.compose(text)
    found = next(((k, v) for k, v in root.value if k.value == "fidelity"), None)
    current = (yaml.safe_load(text) or {}).get("fidelity") or {}
    new = dict(current)
    new.update({"subset": budget.subset, "val_size": budget.val_size, "rungs": [_plain(r) for r in budget.rungs],
                "repeats": repeats})
    for key in ("batch_size", "lr", "warmup", "grad_clip"):
        if getattr(budget, key) != getattr(space.fidelity, key):
            new[key] = getattr(budget, key)
    block = f"# {note}\nfidelity: " + yaml.safe_dump(new, default_flow_style=True, sort_keys=False,
                                                     width=1000).strip() + "\n"
    lines = text.splitlines(keepends=True)
    if found is None:
        updated = text + ("" if not text or text.endswith("\n") else "\n") + block
    else:
        first, last = found[0].start_mark.line, _last_line(found[1])
        if first > 0 and lines[first - 1].startswith("# calibrated"):
            first -= 1  # the note of an earlier calibration
        updated = "".join(lines[:first]) + block + "".join(lines[last + 1:])
    parse_space(updated, name=space.name, source=str(path))  # never write a file the tool cannot read
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(updated)
    tmp.replace(path)
    return path


def writable_space_file(space: SearchSpace) -> Path:
    """The file ``--write`` would change, checked before any training."""

    path = Path(space.path or "")
    if not path.is_file():
        raise NasError("--write: this space was not read from a file")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise NasError(f"--write: {path} (or its folder) is not writable")
    return path


def _last_line(node) -> int:
    """The last line holding part of ``node``'s value (a block collection's
    end mark lies on the line of whatever follows it)."""

    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        return _last_line(last[1] if isinstance(node, yaml.MappingNode) else last)
    end = node.end_mark
    return end.line - 1 if end.column == 0 and end.line > node.start_mark.line else end.line


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value
