"""What a study's trials say, read by the search, the report and the
dashboard alike: the Pareto front drawn on each trial's selecting seed, the
attention-free baseline, the pooled seed noise, the front's text summary
and the config a trial exports (docs/design.md section 6a)."""
from __future__ import annotations

import math
import statistics
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from ..model.config import ArchConfig
from ..storage.backends import DEFAULT_STORAGE, mask_url
from ..training.evaluate import EVALUATION
from ..training.noise import (
    SeedNoise,
    front_gain,
    marks_legend,
    neighbour_marks,
    selecting_accuracy,
    shown_accuracies,
    trial_noise,
)
from . import halving

#: study user attr holding the space file the study was created with
SPACE_ATTR = "space_yaml"


#: study user attr: the parameters of the attention-free architecture enqueued
#: as the study's first trial (its trial carries user attr ``baseline``)
BASELINE_ATTR = "baseline_params"


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's trained attention-free trial: the enqueued baseline, else
    (studies made before it was enqueued) any complete trial of the same
    architecture."""
    superseded = {t.user_attrs["supersedes"] for t in study.get_trials(deepcopy=False) if "supersedes" in t.user_attrs}
    trained = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if "not_trained" not in t.user_attrs and t.values and t.user_attrs.get("kind") != EVALUATION
               and t.number not in superseded]
    marked = [t for t in trained if t.user_attrs.get("baseline")]
    if marked:
        return marked[0]
    return next((t for t in trained if _attention_free(t)), None)


def _attention_free(trial: optuna.trial.FrozenTrial) -> bool:
    """The trial's stored architecture has no attention anywhere (read from
    its config, which carries the data's classes and image size)."""

    text = trial.user_attrs.get("config")
    if not text:
        return False
    cfg = ArchConfig.from_yaml(text)
    return all(s.transition is None or s.transition.type == "none" for s in cfg.stages) and all(
        b.attention.type == "none" for _, _, b in cfg.blocks())


def trials_so_far(study: optuna.Study) -> str:
    """``N trials so far`` for a run's first line, queued trials not counted
    (the baseline says it comes first)."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    queued = "; the attention-free baseline is queued first" if any(t.user_attrs.get("baseline") for t in waiting) else ""
    return f"{len(study.trials) - len(waiting)} trials so far{queued}"


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible, trained, completed trials not dominated in (accuracy, every
    cost objective), one per architecture, sorted by the first cost (MACs or
    latency). A search trial stands on the accuracy it was selected on, its
    first seed (:func:`nas.training.noise.selecting_accuracy`), so that its further
    seeds, drawn after the selection, can judge it without the selection's
    bias; a promoted summary on its seed mean."""
    done = [t for t in _results(study) if "not_trained" not in t.user_attrs]
    points = [(selecting_accuracy(t), *t.values[1:]) for t in done]
    ranks = halving.nondominated_ranks(points)
    front = [t for t, r in zip(done, ranks) if r == 0]
    return sorted(front, key=lambda t: (t.values[1], -selecting_accuracy(t)))


def study_seed_std(study: optuna.Study) -> SeedNoise:
    """The pooled seed noise of the study's repeated trials
    (:func:`nas.training.noise.trial_noise`): the noise the front is judged with."""
    return trial_noise(_results(study))


def _results(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed trials that each stand for one architecture's result:
    not a copy of an earlier trial (``duplicate_of``), not one seed's
    training inside a promoted study (kind ``evaluation``: its summary trial
    stands for it), not a summary superseded by a later one."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "duplicate_of" not in t.user_attrs and t.user_attrs.get("kind") != EVALUATION]
    superseded = {t.user_attrs["supersedes"] for t in done if "supersedes" in t.user_attrs}
    return [t for t in done if t.number not in superseded]


def format_front(front: list[optuna.trial.FrozenTrial], seed_std: SeedNoise | float = 0.0,
                 baseline: optuna.trial.FrozenTrial | None = None) -> str:
    """The front as a table: per point the mean validation accuracy of the
    seeds drawn after the search selected it (``*`` after the value: it has
    none, and the value is the selecting seed's, biased upwards), its seed
    std, the noise mark of :func:`nas.training.noise.neighbour_marks` (explained under
    the table) and, given the study's attention-free ``baseline``, accuracy,
    P(gain > 0) and MACs against it, judged on those seeds too."""
    marks = neighbour_marks(front, seed_std)
    timed = any("latency_ms" in t.user_attrs for t in front)
    lines = [f"{'trial':>5}  {'val acc':>8}  {'± std':>6}  {'seeds':>5}  {'noise':>5}  {'MACs':>8}  "
             + (f"{'ms/step':>8}  " if timed else "") + f"{'params':>9}  "
             + (f"{'Δ acc':>7}  {'P(Δ>0)':>6}  {'Δ MACs':>8}  " if baseline is not None else "") + "attention"]
    biased = False
    for t, mark in zip(front, marks):
        seeds = len(t.user_attrs.get("seed_accuracies") or [0])
        std = t.user_attrs.get("accuracy_std")
        shown, free = shown_accuracies(t)
        biased |= not free
        latency = f"{t.user_attrs.get('latency_ms', math.nan):8.1f}  " if timed else ""
        delta = ""
        if baseline is not None:
            g = front_gain(t, baseline, seed_std)
            p = "" if g.probability is None or t.number == baseline.number else f"{g.probability:.2f}"
            delta = (f"{g.delta:+7.4f}  {p:>6}  "
                     f"{(t.user_attrs['macs'] - baseline.user_attrs['macs']) / 1e6:+7.2f}M  ")
        value = f"{statistics.fmean(shown):7.4f}{' ' if free else '*'}"
        lines.append(f"{t.number:>5}  {value:>8}  {'' if std is None else f'{std:.4f}':>6}  {seeds:>5}  "
                     f"{mark:>5}  {t.user_attrs['macs'] / 1e6:7.2f}M  {latency}{t.user_attrs['params']:>9,}  "
                     f"{delta}{_attention_summary(t)}")
    lines.append("val acc: the mean of the seeds drawn after the search selected the point (its first seed chose it)"
                 + ("; *: no such seed, the selecting seed's accuracy (biased upwards on a front)" if biased else ""))
    if baseline is not None:
        base_shown = statistics.fmean(shown_accuracies(baseline)[0])
        lines.append(f"Δ, P(Δ>0): against the attention-free baseline, trial {baseline.number} "
                     f"(accuracy {base_shown:.4f}, {baseline.user_attrs['macs'] / 1e6:.2f}M MACs), on the seeds "
                     f"after selection, t-based")
    if any(marks):
        lines.append(marks_legend(seed_std))
    return "\n".join(lines)


def front_summary(front: list[optuna.trial.FrozenTrial], seed_std: SeedNoise | float) -> list[dict]:
    """The front as plain data (a study user attr): per point the mean
    accuracy of its seeds after selection (``selection_free`` False: only the
    selecting seed), seed std, seeds and noise mark."""
    out = []
    for t, mark in zip(front, neighbour_marks(front, seed_std)):
        shown, free = shown_accuracies(t)
        out.append({"trial": t.number, "accuracy": round(statistics.fmean(shown), 6), "selection_free": free,
                    "accuracy_std": t.user_attrs.get("accuracy_std"),
                    "seeds": len(t.user_attrs.get("seed_accuracies") or [0]), "noise": mark,
                    "macs": int(t.user_attrs["macs"]),
                    **({"latency_ms": t.user_attrs["latency_ms"]} if "latency_ms" in t.user_attrs else {})})
    return out


def _attention_summary(trial: optuna.trial.FrozenTrial) -> str:
    types = {k: v for k, v in trial.params.items() if k.endswith(".type")}
    return " ".join(f"{k[:-5]}={v}" for k, v in types.items()) or "(fixed)"





def is_baseline(trial: optuna.trial.FrozenTrial) -> bool:
    """The attention-free baseline: the trial marked ``baseline`` (the
    search's enqueued one, a promoted study's baseline summary) or any trial
    whose stored architecture has no attention anywhere."""
    return bool(trial.user_attrs.get("baseline")) or _attention_free(trial)


def exported_config(study: optuna.Study, number: int, attrs: dict[str, Any], accuracy: float,
                    storage: str | None = None) -> ArchConfig:
    """Trial ``number``'s architecture with its metrics and provenance in
    ``meta``: what ``export`` writes and ``search.py train`` retrains."""
    a = attrs
    cfg = ArchConfig.from_yaml(a["config"], source=f"trial {number}")
    metrics = {"val_accuracy": accuracy, "macs": a["macs"], "params": a["params"],
               "elementwise": a.get("elementwise"), "structure_hash": a["structure_hash"],
               "rungs": a.get("rungs"), "seed_accuracies": a.get("seed_accuracies"),
               "accuracy_std": a.get("accuracy_std")}
    if "latency_ms" in a:  # ms per training step on the machine the search ran on
        metrics["latency_ms"] = a["latency_ms"]
    fidelity = a.get("fidelity") or study.user_attrs.get("fidelity") or {}
    cfg.meta = {
        "dataset": fidelity.get("dataset", "cifar10"),
        "metrics": metrics,
        "provenance": {
            "study": study.study_name, "trial": number,
            "storage": mask_url(storage or DEFAULT_STORAGE),
            "space": study.user_attrs.get("space_name"), "fidelity": fidelity, "seed": a.get("seed"),
            "data_fingerprint": study.user_attrs.get("data_fingerprint"),
            "versions": study.user_attrs.get("versions"),
            "exported": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    }
    return cfg
