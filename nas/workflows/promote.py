"""``python search.py promote``: retrain a study's chosen architectures at
the full budget, beside the attention-free baseline, and say whether the
proxy's order held (docs/design.md section 6a).

Which architectures: the proxy study's Pareto front (default), its ``top``
K by proxy accuracy (besides the baseline), or the trials named; the space's attention-free
baseline always joins them, so every answer has its reference. Each is
trained with ``seeds`` seeds at the ``train`` command's recipe
(:func:`nas.training.evaluate.full_budget`). Every training is one stored evaluation
(:mod:`nas.training.evaluate`) in the study ``NAME:promoted`` of the same storage,
linked back to its proxy trial (``proxy_trial``, ``proxy_accuracy``,
``structure_hash``), with its checkpoint attached as an optuna-dashboard
artifact; a killed promote resumes where it stopped (a half-done training
from its last epoch boundary). Once an architecture's seeds are done, a
summary trial holds their mean (user attrs ``seed_accuracies``,
``accuracy_std``), shaped like a search trial, so that ``report``,
``export`` and the dashboard read the promoted study as any other: its
front is drawn on the means, never on one seed.

Confirmation on independent evidence (docs/design.md 6a): the seeds start
at ``SEED_OFFSETS["promote"]`` (no search trained with them: a proxy trial's
seed 0 would rebuild its very weights and batches) and accuracy is measured
on the confirmation images, disjoint from the search's validation images and
held out of training in both (:func:`nas.training.evaluate.budget_splits`).

The table printed: per architecture the validation mean ± std, MACs,
params, accuracy against the baseline with the standard error of the
difference and the t-based probability that the gain is real (the decision
function :func:`nas.training.noise.gain`, the seed std pooled over the promoted
architectures weighted by n - 1; a diverged seed counts at chance accuracy
in the mean and stays out of the pooled std), and the training time per seed; then Kendall tau between proxy and promoted
accuracy (scipy) and whether the proxy's most accurate architecture is still
the most accurate. ``test=True`` adds the test accuracy of the promoted
front only, from the stored checkpoints: it is shown, never used to choose.
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from ..device import configure_threads, resolve_runtime
from ..errors import NasError
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import ArchConfig
from ..model.network import build_model
from ..model.profile import measure_step_latency
from ..report.note import refresh_note
from ..report.report import cost_objective
from ..search.results import baseline_trial, pareto_front
from ..search.space import parse_space
from ..storage.artifacts import (
    artifact_dir,
    artifact_store,
    check_artifact_dir,
    trial_artifacts,
)
from ..storage.backends import load_study, mask_url, storage_for_reading
from ..training.budget import Fidelity
from ..training.datasets import load_dataset
from ..training.evaluate import (
    EVALUATION,
    SEED_OFFSETS,
    Job,
    check_same_data,
    full_budget,
    load_training_data,
    mean_std,
    open_evaluations,
    run_jobs,
    sibling_evaluations,
)
from ..training.noise import (
    RESOLVED,
    SeedNoise,
    bonferroni,
    gain,
    judge_best,
    pooled_noise,
    what_it_would_take,
)
from ..training.train import evaluate as accuracy_of
from .calibrate import rank_agreement

#: the ``kind`` user attr of a promoted study, and of its summary trials
#: (one per architecture: the mean of its seeds)
PROMOTED = "promoted"
#: the promoted study's default name: the proxy study's plus this
SUFFIX = ":promoted"
#: --seeds at most
MAX_SEEDS = 8


@dataclass
class PromotionRun:
    study_name: str
    storage: str | None = None
    #: "front" (default), "top" or "trials"
    which: str = "front"
    top: int | None = None
    trials: list[int] | None = None
    seeds: int = 2
    epochs: float | None = None
    subset: int | None = None
    val_size: int | None = None
    test: bool = False
    into: str | None = None
    data: str | None = None
    device: str | None = None
    precision: str = "auto"
    artifact_dir: str | None = None
    command: str = ""
    #: makes each training's progress hook (the CLI's status bar or periodic lines); None: silent
    progress: Callable[[], Callable[[int, int, float], None]] | None = None
    #: resume a promotion whose numerics plan was measured on another kind of machine (nas.kernels.plan)
    mix_numerics: bool = False


@dataclass
class Candidate:
    """One architecture to promote, and the proxy trial it came from (None:
    the baseline, which the proxy study did not train)."""

    cfg: ArchConfig
    proxy: optuna.trial.FrozenTrial | None
    baseline: bool = False

    @property
    def label(self) -> str:
        if self.baseline:
            return "baseline" + (f" (trial {self.proxy.number})" if self.proxy is not None else "")
        return f"trial {self.proxy.number}" if self.proxy is not None else self.cfg.structure_hash()[:8]


@dataclass
class Promoted:
    """One promoted architecture's result."""

    candidate: Candidate
    summary: optuna.trial.FrozenTrial
    accuracies: list[float]
    train_seconds: float  # mean per seed
    test: list[float] | None = None

    @property
    def accuracy(self) -> float:
        return self.summary.values[0]

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.summary.user_attrs["seeds"]]

    @property
    def diverged(self) -> list[int]:
        """Positions in ``accuracies`` of diverged seeds (counted at chance)."""
        return [int(i) for i in self.summary.user_attrs.get("diverged_seeds") or []]

    def stable(self) -> dict[int, float]:
        """seed -> accuracy of the seeds that did not diverge."""
        return {s: a for i, (s, a) in enumerate(zip(self.seeds, self.accuracies)) if i not in self.diverged}


@dataclass
class Promotion:
    proxy_study: str
    study: optuna.Study
    budget: Fidelity
    train_images: int
    val_images: int
    seeds: list[int]
    rows: list[Promoted]
    front: list[int]  # summary trial numbers on the promoted front
    baseline: Promoted | None
    seed_std: SeedNoise
    tau: float | None
    proxy_best: Promoted | None
    failed: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- which architectures


def _trained(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "not_trained" not in t.user_attrs and "config" in t.user_attrs and t.values
            and t.user_attrs.get("kind") != EVALUATION]


def select_candidates(study: optuna.Study, which: str = "front", top: int | None = None,
                      numbers: list[int] | None = None) -> list[Candidate]:
    """The architectures to promote, cheapest first, one per structure, the
    attention-free baseline always among them."""
    trained = _trained(study)
    if not trained:
        raise NasError(f"study {study.study_name!r} has no completed, trained trial yet; nothing to promote")
    base = baseline_trial(study)
    if base is not None and "config" in base.user_attrs:
        base_cfg = ArchConfig.from_yaml(base.user_attrs["config"])
    else:  # a space without `none` everywhere, or a study made before baselines: build it from the space
        space = space_of(study)
        model_cfg = ArchConfig.from_yaml(trained[0].user_attrs["config"])
        base_cfg = space.base_config(model_cfg.num_classes)
        base_cfg.input_size = model_cfg.input_size
        base = None
    base_hash = base_cfg.structure_hash()
    if which == "trials":
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        promotable = {t.number for t in trained}
        chosen = []
        for n in numbers or []:
            t = by_number.get(n)
            if t is None:
                raise NasError(f"--trials: study {study.study_name!r} has no trial {n} "
                               f"(trials 0..{len(by_number) - 1})")
            if n not in promotable:
                why = (f"is {t.state.name.lower()}" if t.state != TrialState.COMPLETE else
                       "was never trained (infeasible)" if "not_trained" in t.user_attrs else
                       "has no stored architecture (no config user attr)")
                raise NasError(f"--trials: trial {n} {why}; promote takes completed, trained trials")
            chosen.append(t)
    elif which == "top":  # the K most accurate designs besides the baseline, which joins them anyway
        seen = {base_hash}
        chosen = []
        for t in sorted(trained, key=lambda t: (-t.values[0], t.values[1], t.number)):
            if t.user_attrs["structure_hash"] not in seen and len(chosen) < (top or 0):
                seen.add(t.user_attrs["structure_hash"])
                chosen.append(t)
    elif which == "front":
        chosen = pareto_front(study)
    out: dict[str, Candidate] = {}
    for t in chosen:
        h = t.user_attrs["structure_hash"]
        if h not in out:
            out[h] = Candidate(ArchConfig.from_yaml(t.user_attrs["config"]), t, baseline=h == base_hash)
    if base_hash not in out:
        out[base_hash] = Candidate(base_cfg, base, baseline=True)
    return sorted(out.values(), key=lambda c: (not c.baseline, c.proxy.user_attrs["macs"] if c.proxy else 0))


def space_of(study: optuna.Study):
    text = study.user_attrs.get("space_yaml")
    if text is None:
        raise NasError(f"study {study.study_name!r} was not made by search.py (no space recorded); "
                       f"promote takes a search's study")
    return parse_space(text, name=study.user_attrs.get("space_name", "space"), check=False)


# --------------------------------------------------------------------------- the promoted study


def open_promoted(proxy: optuna.Study, name: str, url: str, budget: Fidelity, fingerprint: str,
                  command: str = "", mix_numerics: bool = False) -> optuna.Study:
    """The study that holds the promotion, created or resumed; one of
    another kind, from another proxy study or at another budget is refused
    before anything is written."""
    # accuracy and the search's cost (MACs or latency); a third objective of the search is left out
    return open_evaluations(
        name, url, PROMOTED, "a promotion", "--into", budget, fingerprint,
        same={"promoted_from": (proxy.study_name, f"promotes study {{old!r}}, not {proxy.study_name!r}")},
        metric_names=list(proxy.metric_names or ["accuracy", "macs"])[:2],
        attrs={"promoted_from": proxy.study_name,
               **{key: proxy.user_attrs[key] for key in ("space_name", "space_yaml") if key in proxy.user_attrs}},
        command=command, mix_numerics=mix_numerics)


def summaries(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """structure hash -> the latest summary trial of each architecture."""
    latest: dict[str, optuna.trial.FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("kind") == PROMOTED:
            latest[t.user_attrs["structure_hash"]] = t
    return latest


def _write_summary(study: optuna.Study, c: Candidate, runs: list[optuna.trial.FrozenTrial], budget: Fidelity,
                   cost: float | None) -> optuna.trial.FrozenTrial:
    """A COMPLETE trial with the seed mean of ``runs`` as its accuracy,
    shaped like a search trial (the proxy trial's params; its cost: MACs,
    or ``cost`` in ms per step for a latency study), so the front,
    ``report`` and ``export`` read it as one. When an architecture's stored
    trainings or proxy link change (more seeds, a proxy trial of the
    baseline trained since), a new one ``supersedes`` the old (Optuna does
    not change a finished trial)."""
    first = runs[0].user_attrs
    chance = 1.0 / ArchConfig.from_yaml(first["config"]).num_classes
    # a diverged seed counts at chance accuracy in the mean, as the search counts it (out of the pooled
    # variance: its position is in diverged_seeds)
    accuracies = [t.values[0] if t.state == TrialState.COMPLETE else chance for t in runs]
    diverged = [i for i, t in enumerate(runs) if t.state != TrialState.COMPLETE]
    mean, std = mean_std(accuracies)
    attrs = {"kind": PROMOTED, "config": first["config"], "structure_hash": first["structure_hash"],
             "macs": first["macs"], "params": first["params"], "fidelity": budget.as_dict(),
             "budget_key": budget.budget_key(), "seed": runs[0].user_attrs["seed"],
             "seeds": [t.user_attrs["seed"] for t in runs], "seed_accuracies": accuracies, "accuracy_std": std,
             "evaluations": [t.number for t in runs], "rungs": [[budget.epochs, mean]], "diverged_seeds": diverged,
             "seed_failures": [f"seed {t.user_attrs['seed']}: {t.user_attrs.get('fail_reason')} (counted at chance "
                               f"accuracy)" for t in runs if t.state != TrialState.COMPLETE],
             "train_seconds": round(sum(t.user_attrs.get("train_seconds", 0.0) for t in runs) / len(runs), 3),
             "images_trained": sum(t.user_attrs.get("images_trained", 0) for t in runs),
             "proxy_study": first.get("proxy_study"), "proxy_trial": None if c.proxy is None else c.proxy.number,
             "proxy_accuracy": None if c.proxy is None else c.proxy.values[0]}
    if c.baseline:
        attrs["baseline"] = True
    if cost is not None:
        attrs["latency_ms"] = cost
    old = summaries(study).get(first["structure_hash"])
    if old is not None:
        attrs["supersedes"] = old.number
    params = dict(c.proxy.params) if c.proxy is not None else {}
    distributions = dict(c.proxy.distributions) if c.proxy is not None else {}
    trial = optuna.trial.create_trial(state=TrialState.COMPLETE,
                                      values=[mean, float(first["macs"] if cost is None else cost)], params=params,
                                      distributions=distributions, user_attrs=attrs)
    study.add_trial(trial)
    return study.get_trials(deepcopy=False)[-1]


def _latency(c: Candidate, space, runtime) -> float:
    """A latency study's cost of ``c``: its proxy trial's ms per training
    step, or (the baseline, never trained by the search) measured here as
    the search measures it, at the space's batch size."""
    if c.proxy is not None and "latency_ms" in c.proxy.user_attrs:
        return float(c.proxy.user_attrs["latency_ms"])

    shape = (c.cfg.in_channels, c.cfg.input_size, c.cfg.input_size)
    return measure_step_latency(build_model(c.cfg), shape, space.fidelity.batch_size, runtime)


def _stored_runs(study: optuna.Study, budget_key: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    """structure hash -> the finished trainings at this budget, by seed: the
    completed ones and those that diverged (FAIL, counted at chance)."""
    runs: dict[str, dict[int, optuna.trial.FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        a = t.user_attrs
        if a.get("kind") == EVALUATION and a.get("budget_key") == budget_key and (
                t.state == TrialState.COMPLETE or is_diverged(t)):
            runs.setdefault(a["structure_hash"], {}).setdefault(a["seed"], t)
    return {h: [by_seed[s] for s in sorted(by_seed)] for h, by_seed in runs.items()}


def is_diverged(trial: optuna.trial.FrozenTrial) -> bool:
    """A stored evaluation whose training diverged (not one that ran out of
    memory or was interrupted: those say nothing about the design)."""
    a = trial.user_attrs
    return (trial.state == TrialState.FAIL and bool(a.get("training_failed"))
            and str(a.get("fail_reason", "")).startswith("DivergedError"))


def _candidate_of(summary: optuna.trial.FrozenTrial, proxy: optuna.Study) -> Candidate:
    """The candidate a summary of an earlier promote stands for."""
    a = summary.user_attrs
    number = a.get("proxy_trial")
    trial = proxy.get_trials(deepcopy=False)[number] if number is not None and number < len(proxy.trials) else None
    return Candidate(ArchConfig.from_yaml(a["config"]), trial, baseline=bool(a.get("baseline")))


# --------------------------------------------------------------------------- the run


def run_promotion(run: PromotionRun, out: Callable[[str], None] = print) -> Promotion:
    """Train what is missing, write the summaries, compare every
    architecture the promoted study holds."""

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    proxy = load_study(run.study_name, run.storage)
    if proxy.user_attrs.get("kind") == PROMOTED:
        raise NasError(f"study {run.study_name!r} is a promotion already; promote the search's study "
                       f"({proxy.user_attrs.get('promoted_from')!r})")
    space = space_of(proxy)
    candidates = select_candidates(proxy, run.which, run.top, run.trials)
    url = storage_for_reading(run.storage, run.study_name)
    folder = artifact_dir(url, run.artifact_dir)
    check_artifact_dir(folder)
    runtime = resolve_runtime(run.device, run.precision)
    threads = configure_threads()
    budget = full_budget(space.fidelity.dataset, run.epochs, run.subset, run.val_size)
    images = load_dataset(budget.dataset, run.data)
    check_same_data(proxy.study_name, proxy.user_attrs, images.fingerprint,
                    "promote it on the data it was searched on (--data DIR)")
    data = load_training_data(budget, images=images)
    study = open_promoted(proxy, run.into or proxy.study_name + SUFFIX, url, budget, images.fingerprint, run.command,
                          run.mix_numerics)
    store = artifact_store(folder)
    # seeds no proxy training used (a search's start at its fidelity's seed, 0): the proxy trial's seed 0
    # would rebuild its very weights and batches, the evidence that selected it
    seeds = [SEED_OFFSETS["promote"] + i for i in range(run.seeds)]
    latency = cost_objective(proxy) == "latency"
    costs = {c.cfg.structure_hash(): _latency(c, space, runtime) if latency else None for c in candidates}

    def attach_checkpoint(trial: optuna.Trial, model) -> None:
        cfg = ArchConfig.from_yaml(trial.user_attrs["config"])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"model-{cfg.structure_hash()[:8]}-seed{trial.user_attrs['seed']}.pt"
            save_checkpoint(path, model, cfg, data.mean, data.std)
            optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)

    jobs = [Job(c.cfg, seed, "baseline" if c.baseline else "promoted", c.label,
                {"proxy_study": proxy.study_name, "proxy_trial": None if c.proxy is None else c.proxy.number,
                 "proxy_accuracy": None if c.proxy is None else c.proxy.values[0]}, cost=costs[c.cfg.structure_hash()])
            for c in candidates for seed in seeds]
    out(f"promote {len(candidates)} architectures of study {proxy.study_name!r} "
        f"({', '.join(c.label for c in candidates)}) into {study.study_name!r} ({mask_url(url)}): {len(seeds)} "
        f"seeds x {len(data.train_labels)} images x {budget.epochs:g} epochs, {len(data.val_labels)} validation "
        f"images; {runtime.device} {runtime.precision}, {threads} threads")
    _, failures = run_jobs(study, jobs, budget, data, runtime, out, state_dir=folder.parent / "train-states",
                           on_trained=attach_checkpoint, progress=run.progress,
                           # a training copied from another study must bring its checkpoint (--test reads it)
                           sources=sibling_evaluations(study), copy_if=lambda src, t: _has_checkpoint(src, t, store))
    failed = [f"{j.label} seed {j.seed}: {reason}" for j, reason in failures]

    # every seed stored at this budget counts (a later run with fewer --seeds does not drop any)
    stored = _stored_runs(study, budget.budget_key())
    latest = summaries(study)
    for c in candidates:
        h = c.cfg.structure_hash()
        runs = stored.get(h)
        if not runs:
            continue
        summary = latest.get(h)
        link = None if c.proxy is None else c.proxy.number
        if (summary is None or summary.user_attrs.get("evaluations") != [t.number for t in runs]
                or summary.user_attrs.get("proxy_trial") != link):
            latest[h] = _write_summary(study, c, runs, budget, costs[h])
    # the table: every architecture the promoted study holds, this run's and earlier runs'
    by_hash = {c.cfg.structure_hash(): c for c in candidates}
    rows = [Promoted(by_hash.get(h) or _candidate_of(summary, proxy), summary,
                     list(summary.user_attrs["seed_accuracies"]), summary.user_attrs["train_seconds"])
            for h, summary in latest.items()]
    if not rows:
        raise NasError("no promoted architecture finished a training: " + "; ".join(failed))
    seed_std = pooled_noise([r.stable() for r in rows])
    front = {t.number for t in pareto_front(study)}
    baseline = next((r for r in rows if r.candidate.baseline), None)
    with_proxy = [r for r in rows if r.candidate.proxy is not None]
    tau = None
    if len(with_proxy) >= 2:

        tau = rank_agreement([r.candidate.proxy.values[0] for r in with_proxy], [r.accuracy for r in with_proxy])[0]
    proxy_best = max(with_proxy, key=lambda r: r.candidate.proxy.values[0], default=None)
    if run.test:
        _test_accuracies([r for r in rows if r.summary.number in front], study, store, images, runtime)
    try:

        refresh_note(study, url)
    except NasError:
        raise
    except Exception as exc:  # e.g. a read-only role: the results are stored all the same
        out(f"warning: the optuna-dashboard note was not written: {type(exc).__name__}: {exc}")
    return Promotion(proxy.study_name, study, budget, len(data.train_labels), len(data.val_labels),
                     sorted({s for r in rows for s in r.summary.user_attrs["seeds"]}), rows, sorted(front), baseline,
                     seed_std, tau, proxy_best, failed)


def _has_checkpoint(study: optuna.Study, trial: optuna.trial.FrozenTrial, store) -> bool:
    """Whether ``trial`` has an artifact that this run's artifact folder can
    open (a training copied from another study must bring its checkpoint:
    ``--test`` reads it)."""
    for artifact_id in trial_artifacts(study, trial).values():
        try:
            with store.open_reader(artifact_id):
                return True
        except ArtifactNotFound:  # not in this folder (promoted with another --artifact-dir): train it here
            return False
    return False


def _test_accuracies(rows: list[Promoted], study: optuna.Study, store, images, runtime) -> None:
    """Each front row's test accuracy per seed, from its trainings'
    checkpoints (shown, never stored or used to choose)."""

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for row in rows:
        row.test = []
        for number in row.summary.user_attrs["evaluations"]:
            if trials[number].state != TrialState.COMPLETE:  # diverged: no checkpoint
                continue
            attached = trial_artifacts(study, trials[number])
            if not attached:
                raise NasError(f"--test: trial {number} of study {study.study_name!r} has no checkpoint in the "
                               f"artifact folder (trained elsewhere? pass its --artifact-dir)")
            artifact_id = next(iter(attached.values()))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.pt"
                try:
                    with store.open_reader(artifact_id) as reader:
                        path.write_bytes(reader.read())
                except Exception as exc:
                    raise NasError(f"--test: cannot read the checkpoint of trial {number}: {exc}") from None
                model, payload = load_checkpoint(path)
            model = model.to(runtime.device)
            row.test.append(accuracy_of(model, images.test_images, images.test_labels, payload["mean"],
                                        payload["std"], runtime))


# --------------------------------------------------------------------------- the table


def format_promotion(p: Promotion) -> str:
    """The promoted architectures (``*``: on the promoted front), each
    against the baseline, then tau and the proxy's best."""
    has_test = any(r.test is not None for r in p.rows)
    w = max(len(r.candidate.label) for r in p.rows)
    head = (f"{'':1} {'trial':>{w}}  {'proxy acc':>9}  {'val acc':>7}  {'± std':>6}  {'seeds':>5}  {'MACs':>8}  "
            f"{'params':>9}  {'Δ acc':>7}  {'± Δ':>6}  {'P(Δ>0)':>6}  {'s/seed':>7}  "
            + (f"{'test acc':>8}  {'± std':>6}  " if has_test else "") + "attention")
    lines = [f"promoted: study {p.study.study_name!r} ({p.train_images} training images x {p.budget.epochs:g} epochs, "
             f"{p.val_images} validation images, seeds {', '.join(map(str, p.seeds))})", head]
    base = p.baseline
    for r in sorted(p.rows, key=lambda r: r.summary.user_attrs["macs"]):
        proxy = r.candidate.proxy
        mean, std = r.accuracy, r.summary.user_attrs.get("accuracy_std")
        delta = ""
        if base is not None and r is not base:
            g = _gain(r, base, p.seed_std)
            delta = (f"{g.delta:+7.4f}  {'' if g.se is None else f'{g.se:.4f}':>6}  "
                     f"{'' if g.probability is None else f'{g.probability:.2f}':>6}")
        else:
            delta = f"{'':>7}  {'':>6}  {'':>6}"
        test = ""
        if has_test:
            if r.test:
                t_mean, t_std = mean_std(r.test)
                test = f"{t_mean:8.4f}  {'' if t_std is None else f'{t_std:.4f}':>6}  "
            else:  # not on the front: its test accuracy is not looked at
                test = f"{'-':>8}  {'':>6}  "
        lines.append(
            f"{'*' if r.summary.number in p.front else ' '} {r.candidate.label:>{w}}  "
            f"{'' if proxy is None else f'{proxy.values[0]:.4f}':>9}  {mean:7.4f}  "
            f"{'' if std is None else f'{std:.4f}':>6}  {len(r.accuracies):>5}  "
            f"{r.summary.user_attrs['macs'] / 1e6:7.2f}M  {r.summary.user_attrs['params']:>9,}  {delta}  "
            f"{r.train_seconds:7.0f}  {test}{_attention(r)}")
    cost = p.study.metric_names[1] if p.study.metric_names else "macs"
    if p.seed_std.known:
        noise = (f"± Δ: its standard error from the seed std pooled over the promoted architectures, "
                 f"{p.seed_std.std:.4f} ({p.seed_std.df} degrees of freedom); P(Δ>0): the t-based probability that "
                 f"the gain is real")
    elif any(len(r.accuracies) > 1 for r in p.rows):
        noise = "no ± Δ: fewer than two architectures have 2+ seeds, so no seed std is known yet"
    else:
        noise = "no ± Δ: one seed each, so the noise is unknown (--seeds 2 or more)"
    lines.append(f"*: on the promoted front (validation mean against {cost}); Δ acc: against the baseline; {noise}")
    if has_test:
        lines.append("test accuracy: the promoted front only, from the stored checkpoints; shown, never used to choose")
    n = sum(1 for r in p.rows if r.candidate.proxy is not None)
    if p.tau is None:
        lines.append("Kendall tau proxy vs promoted: fewer than two promoted architectures have a proxy accuracy")
    elif math.isnan(p.tau):
        lines.append(f"Kendall tau proxy vs promoted accuracy over {n} architectures: undefined (one side has "
                     f"every value equal)")
    else:
        lines.append(f"Kendall tau proxy vs promoted accuracy over {n} architectures: {p.tau:+.3f}")
    if p.proxy_best is not None:
        best = max(p.rows, key=lambda r: r.accuracy)
        rank = sorted(p.rows, key=lambda r: -r.accuracy).index(p.proxy_best) + 1
        if best is p.proxy_best:
            lines.append(f"the proxy's most accurate ({p.proxy_best.candidate.label}) is still the most accurate")
        else:
            g = _gain(best, p.proxy_best, p.seed_std)
            prob = g.probability
            within = "" if prob is None else (f"; within noise (P = {prob:.2f})" if prob < RESOLVED else
                                              f"; beyond noise (P = {prob:.2f})")
            lines.append(f"the proxy's most accurate ({p.proxy_best.candidate.label}) is now rank {rank} of "
                         f"{len(p.rows)}: {best.candidate.label} is {g.delta:+.4f} more accurate{within}")
    if base is not None:
        lines.append(_verdict(p))
    for line in p.failed:
        lines.append(f"failed: {line}")
    return "\n".join(lines)


def verdict_threshold(designs: int) -> float:
    """The P(gain > 0) the best of ``designs`` attention designs must reach
    to count as beating the baseline beyond noise: :data:`RESOLVED` with a
    Bonferroni correction, 1 - (1 - RESOLVED) / designs (picking the best of
    K and testing it once would call a null effect a win far more often
    than 1 - RESOLVED: with 8 designs, more than half the time)."""
    return bonferroni(designs)


def _gain(higher: Promoted, lower: Promoted, noise: SeedNoise):
    """The decision function (:func:`nas.training.noise.gain`) on two promoted rows,
    their seeds given so that a paired test is used where it is stronger."""
    return gain(higher.accuracies, lower.accuracies, noise, higher_seeds=higher.seeds, lower_seeds=lower.seeds)


def decide(rows: list[Promoted], base: Promoted, noise: SeedNoise) -> tuple[Promoted, object, float] | None:
    """The verdict's numbers (:func:`nas.training.noise.judge_best`): the most
    accurate attention design, its gain over the baseline and the bar it
    must reach; None with no design."""
    others = [r for r in rows if r is not base]
    if not others:
        return None
    v = judge_best([r.accuracies for r in others], base.accuracies, noise, seeds=[r.seeds for r in others],
                   baseline_seeds=base.seeds)
    return others[v.best], v.gain, v.bar


#: the verdict's opening words, one per outcome (tests match on them whole)
BEATS = "VERDICT: attention beats the baseline beyond noise"
NO_BEAT = "VERDICT: no attention design beats the baseline beyond noise"
UNKNOWN_NOISE = "VERDICT: noise unknown"


def _verdict(p: Promotion) -> str:
    """Does any attention design beat the baseline beyond noise? And if not,
    what would it take to know."""
    base = p.baseline
    decided = decide(p.rows, base, p.seed_std)
    if decided is None:
        return "only the baseline was promoted"
    best, g, bar = decided
    designs = len(p.rows) - 1
    if g.probability is None:
        return (f"{UNKNOWN_NOISE}: best attention design {best.candidate.label}, {g.delta:+.4f} against the "
                f"baseline (train 2+ seeds)")
    tested = (f"{g.test}, {g.df} df, P = {g.probability:.3f}; the best of {designs} design(s) counts at "
              f"P >= {bar:.3f}")
    if g.probability >= bar:
        return f"{BEATS}: {best.candidate.label}, {g.delta:+.4f} ± {g.se:.4f} ({tested})"
    return (f"{NO_BEAT}: the best, {best.candidate.label}, is {g.delta:+.4f} ± {g.se:.4f} ({tested})\n"
            + what_it_would_take(g.delta, p.seed_std, level=bar, arms=len(p.rows)))


def _attention(r: Promoted) -> str:
    proxy = r.candidate.proxy
    types = {k: v for k, v in (proxy.params if proxy is not None else {}).items() if k.endswith(".type")}
    if types:
        return " ".join(f"{k[:-5]}={v}" for k, v in types.items())
    return "no attention" if r.candidate.baseline else "(fixed)"
