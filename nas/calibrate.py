"""``python search.py calibrate``: how well does a space's proxy fidelity
rank architectures, before anyone spends a day searching with it?
(design.md section 6a)

A sample of the space's architectures (or the user's own configs) is
trained with several seeds at the space's fidelity and at a longer
reference budget; zero-cost scores are computed at initialisation. Each
training is one stored evaluation (:mod:`nas.evaluate`) in the study
``calibrate:<space>``, so an interrupted run resumes where it stopped,
several runs with other fidelities (``--epochs``, ``--subset``) add up,
and optuna-dashboard shows them. The analysis then compares every
fidelity measured for this sample, each rung of it, and every zero-cost
score against the reference's seed means:

* Kendall tau (tau-b, ties handled) and Spearman rho, from scipy, with a
  bootstrap interval over architectures (scipy's ``bootstrap``, paired);
* tau with 1..S seeds averaged (the mean over every choice of k of the S
  seeds), so the number of seeds a front point needs is measured too;
* the pooled seed std, and whether the reference's best architecture is in
  the fidelity's top 3.

It recommends the cheapest (fidelity, seeds) whose tau reaches ``--target``
and ``--write`` puts it into the space file (``rungs``, ``subset``,
``val_size``, ``repeats``).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy import stats

from .config import ArchConfig
from .data import load_dataset
from .errors import NasError
from .evaluate import (EVALUATION, Job, TrainingData, build_seeded, images_at, load_training_data, open_evaluations,
                       run_jobs)
from .models import build_model
from .profile import profile
from .space import Fidelity, SearchSpace, _parse_fidelity, parse_space
from .storage import mask_url, storage_for_search
from .zero_cost import SCORES, zero_cost_scores

#: the reference budget when none is given: 20,000 training images for 10
#: epochs with the space's recipe (one training of resnet20 takes ~13 min
#: on a 2-core AVX2 CPU in fp32, see the README)
REFERENCE_SUBSET = 20000
REFERENCE_EPOCHS = 10.0
#: the two-sided coverage of the bootstrap interval over architectures
INTERVAL = 0.9
#: the reference trains with seeds seed+1000, seed+1001, ...
REFERENCE_SEED_OFFSET = 1000
#: --seeds at most (tau is averaged over every choice of k of the seeds)
MAX_SEEDS = 8


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
    target: float = 0.7
    data: str | None = None
    device: str | None = None
    precision: str = "auto"
    command: str = ""
    #: makes each training's progress hook (the CLI's status bar or periodic lines); None: silent
    progress: Callable[[], Callable[[int, int, float], None]] | None = None


@dataclass
class Row:
    """One fidelity (or one rung of it) or one zero-cost score, against the
    reference."""

    name: str
    kind: str  # "budget": a fidelity's last rung; "rung": an earlier rung; "score": zero-cost
    images: int  # per seed and architecture (0 for a score)
    seed_std: float | None  # pooled over architectures, in accuracy
    taus: list[float]  # tau with k = 1..S seeds averaged
    tau_interval: tuple[float, float]
    rho: float
    best_in_top3: bool
    fidelity: Fidelity | None = None

    @property
    def tau(self) -> float:
        return self.taus[-1]


@dataclass
class Calibration:
    architectures: list[ArchConfig]
    seeds: list[int]
    reference: Fidelity
    reference_means: list[float]
    rows: list[Row]
    recommendation: tuple[Row, int] | None
    target: float
    failed: list[str] = field(default_factory=list)
    #: what the analysis left out and why (a budget or rung not measured by every training)
    notes: list[str] = field(default_factory=list)
    reference_seed_std: float | None = None
    #: Kendall tau between the reference's own seeds (:func:`self_agreement`)
    reference_self_tau: float | None = None


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


def tau_interval(predicted: list[float], reference: list[float], resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval (:data:`INTERVAL`) of Kendall tau
    over architectures resampled with replacement (resamples in which a
    side is constant have no tau and are left out)."""
    if len(predicted) < 3:
        return (math.nan, math.nan)

    def tau(x, y):
        return stats.kendalltau(x, y).statistic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap((np.asarray(predicted, float), np.asarray(reference, float)), tau, paired=True,
                                 vectorized=False, n_resamples=resamples, method="percentile",
                                 rng=np.random.default_rng(seed))
        tail = (1 - INTERVAL) / 2 * 100
        lo, hi = np.nanpercentile(result.bootstrap_distribution, [tail, 100 - tail])
    return float(lo), float(hi)


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
    return Row(name, kind, images, pooled_std(per_seed) if accuracy_units else None,
               seeds_taus(per_seed, reference), tau_interval(means, reference), rho, best in top3, fidelity)


def recommend(rows: list[Row], target: float) -> tuple[Row, int] | None:
    """The cheapest (fidelity, seeds) whose tau reaches ``target``: cost =
    images per seed x seeds; among equal costs the higher tau. Only whole
    budgets qualify (an earlier rung is a point inside another schedule)."""
    options = [(row.images * k, -tau, i, row, k) for i, row in enumerate(rows) if row.kind == "budget"
               for k, tau in enumerate(row.taus, start=1) if not math.isnan(tau) and tau >= target]
    if not options:
        return None
    _, _, _, row, k = min(options, key=lambda o: o[:3])
    return row, k


# --------------------------------------------------------------------------- the run


def open_calibration(run: CalibrationRun, fingerprint: str) -> tuple[optuna.Study, str]:
    url = storage_for_search(run.storage, run.study_name, 1)
    study = open_evaluations(run.study_name, url, "calibrate", "a calibration", "--study", None, fingerprint,
                             attrs={"space_name": run.space.name}, command=run.command)
    return study, url


def run_calibration(run: CalibrationRun, out: Callable[[str], None] = print) -> Calibration:
    """Train what is missing, then analyse everything stored for the sample."""
    from .device import configure_threads, resolve_runtime

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
    from .dashboard import artifact_dir

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
            reference: Fidelity, data: TrainingData, runtime, target: float) -> Calibration:
    """Rows for every budget stored for all of these architectures and
    seeds (the space's fidelity, and any other calibrated before), their
    rungs, and the zero-cost scores; the recommendation."""
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
        budget = _parse_fidelity(entry["budget"])
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
    return Calibration(architectures, seeds, reference, ref_means, rows, recommend(rows, target), target,
                       notes=notes, reference_seed_std=pooled_std(ref_per_seed),
                       reference_self_tau=self_agreement(ref_per_seed))


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


def format_calibration(result: Calibration) -> str:
    s = len(result.seeds)
    head = (f"{'fidelity / score':<26} {'images/seed':>11} {'seed std':>8} {'tau 1 seed':>10} "
            f"{f'tau {s} seeds':>11} {f'{INTERVAL:.0%} interval':>15} {'rho':>6}  ref best in top 3")
    lines = [f"reference: {result.reference.subset or 'all'} images x {result.reference.epochs:g} epochs, mean of "
             f"{s} seed(s); reference accuracies " + ", ".join(f"{m:.4f}" for m in result.reference_means)]
    if result.reference_self_tau is not None:
        lines.append(f"the reference against itself: seed std {result.reference_seed_std:.4f}, tau between its "
                     f"seeds {result.reference_self_tau:+.3f} (a second reference training orders the architectures "
                     f"that much like the first; a fidelity's tau against the reference is limited by the same "
                     f"noise)")
    lines.append(head)
    for row in result.rows:
        lo, hi = row.tau_interval
        interval = "" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"
        lines.append(f"{row.name:<26} {row.images:>11,} {'' if row.seed_std is None else f'{row.seed_std:.4f}':>8} "
                     f"{row.taus[0]:>+10.3f} {row.tau:>+11.3f} {interval:>15} {row.rho:>+6.3f}  "
                     f"{'yes' if row.best_in_top3 else 'no'}")
    if result.recommendation is None:
        lines.append(f"recommendation: no fidelity measured here reaches tau >= {result.target:g} with up to {s} "
                     f"seed(s); try a longer one (--epochs, --subset) or more seeds")
        budgets = [row for row in result.rows if row.kind == "budget" and not math.isnan(row.tau)]
        if budgets:
            best = max(budgets, key=lambda row: (row.tau, -row.images))
            lines.append(f"closest: {best.name} (tau {best.tau:+.3f} with {s} seed(s), {best.images:,} images per "
                         f"seed)")
    else:
        row, k = result.recommendation
        lines.append(f"recommendation: {row.name} with repeats {k} (tau {row.taus[k - 1]:+.3f} >= {result.target:g}; "
                     f"{row.images * k:,} images per front candidate)")
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
    import yaml

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
    import os

    path = Path(space.path or "")
    if not path.is_file():
        raise NasError("--write: this space was not read from a file")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise NasError(f"--write: {path} (or its folder) is not writable")
    return path


def _last_line(node) -> int:
    """The last line holding part of ``node``'s value (a block collection's
    end mark lies on the line of whatever follows it)."""
    import yaml

    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        return _last_line(last[1] if isinstance(node, yaml.MappingNode) else last)
    end = node.end_mark
    return end.line - 1 if end.column == 0 and end.line > node.start_mark.line else end.line


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value
