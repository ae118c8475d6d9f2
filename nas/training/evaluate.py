"""One evaluation: train this architecture at this budget with this seed
(docs/design.md section 6a). Everything that trains more than a search trial
stands on it: the search's repeated front candidates, ``calibrate``, and
after it ``promote`` and ``ablate``.

* :func:`load_training_data` draws a budget's split from the dataset (the
  validation images do not depend on the subset, so accuracies at every
  budget are measured on the same images);
* :func:`train_architecture` builds the model from the seed and trains it;
* :func:`evaluate` does the same but keeps the result as a trial of an
  Optuna study, with the structural hash, the budget and the seed in its user
  attrs: asked again, it returns the stored trial instead of training, so an
  interrupted command resumes where it stopped and optuna-dashboard shows
  every evaluation.
"""
from __future__ import annotations

import hashlib
import math
import statistics
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from ..errors import ConfigError, NasError
from ..kernels.plan import PLAN_ATTR, check_plan, planned
from ..model.config import ArchConfig
from ..model.network import build_model
from ..model.profile import profile
from ..provenance import versions
from ..storage.backends import mask_url, open_storage
from .budget import Fidelity
from .datasets import load_dataset
from .decode import ImageData
from .noise import gain
from .splits import channel_stats, default_val_size, make_splits
from .train import DivergedError, Recipe, RungCallback, TrainResult, train

#: the ``kind`` user attr of a stored evaluation (search trials have none)
EVALUATION = "evaluation"


@dataclass
class TrainingData:
    """One budget's training images and the shared validation images."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    mean: tuple
    std: tuple
    num_classes: int
    image_size: int
    fingerprint: str
    #: which held-out split measures accuracy ("search" or "confirmation") and a hash of its indices
    validation: str = "search"
    val_split: str = ""


def check_same_data(study_name: str, user_attrs: dict, fingerprint: str | None,
                    advice: str = "use --study NEW_NAME") -> None:
    """A study's accuracies are only comparable on the data it started on
    (e.g. not the lossy JPEG copy of CIFAR-10 and the original pixels)."""
    recorded = user_attrs.get("data_fingerprint")
    if fingerprint is not None and recorded not in (None, fingerprint):
        raise NasError(f"study {study_name!r} was run on other data (fingerprint {recorded[:12]}, "
                       f"now {fingerprint[:12]}); {advice}")


def open_evaluations(name: str, url: str, kind: str, what: str, option: str, budget, fingerprint: str,
                     same: dict[str, tuple[Any, str]] | None = None, metric_names: Sequence[str] = ("accuracy", "macs"),
                     attrs: dict[str, Any] | None = None, command: str = "", mix_numerics: bool = False
                     ) -> optuna.Study:
    """The study of a command that trains many evaluations at one budget
    (``promote``, ``ablate``; ``calibrate`` with ``budget`` None, as it has
    two): created, or resumed when it is of the same ``kind``, at the same
    budget, on the same data and with the same values of the ``same`` user
    attrs (``{attr: (value, message)}``, the message formatted with
    ``{old}``); anything else is refused with one line that names ``option``
    to choose another study, before anything is written. ``what`` says what
    such a study is ("a promotion"); ``attrs`` are set on a new study;
    ``command`` is added to its ``commands``."""
    store = open_storage(url)
    if name in {s.study_name for s in optuna.study.get_all_study_summaries(store)}:
        old = optuna.load_study(study_name=name, storage=store)
        if old.user_attrs.get("kind") != kind:
            raise NasError(f"study {name!r} exists and is not {what}; choose another with {option} NAME")
        for key, (value, message) in (same or {}).items():
            if old.user_attrs.get(key) != value:
                raise NasError(f"study {name!r} {message.format(old=old.user_attrs.get(key))}; choose another "
                               f"with {option} NAME")
        if budget is not None and old.user_attrs.get("budget_key") != budget.budget_key():
            f = old.user_attrs.get("fidelity") or {}
            if f == budget.as_dict():  # the same budget, but the attention modules compute something else now
                raise NasError(f"study {name!r} was trained with an earlier version of the attention modules, "
                               f"whose results are not comparable; choose another study with {option} NAME")
            raise NasError(f"study {name!r} was trained at another budget ({f.get('subset') or 'all'} images x "
                           f"{(f.get('rungs') or ['?'])[-1]:g} epochs, {f.get('val_size') or 'default'} validation "
                           f"images); keep its --epochs/--subset/--val-size, or choose another study with "
                           f"{option} NAME")
        check_same_data(name, old.user_attrs, fingerprint, f"choose another study with {option} NAME")
        check_plan(name, old.user_attrs, mix_numerics)
    study = optuna.create_study(study_name=name, storage=store, directions=["maximize", "minimize"],
                                load_if_exists=True)
    if "kind" not in study.user_attrs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))
        budget_attrs = {} if budget is None else {"fidelity": budget.as_dict(), "budget_key": budget.budget_key()}
        for key, value in {**(attrs or {}), "kind": kind, **budget_attrs, "data_fingerprint": fingerprint,
                           "versions": versions(), "created": time.strftime("%Y-%m-%d %H:%M:%S")}.items():
            study.set_user_attr(key, value)
    if command:
        study.set_user_attr("commands", list(study.user_attrs.get("commands", [])) + [mask_url(command)])
    return study


def load_training_data(fidelity, data_dir: str | None = None, images: ImageData | None = None) -> TrainingData:
    """``fidelity``'s split (subset, validation size) of its dataset; pass
    ``images`` to reuse a dataset already loaded."""
    data = images if images is not None else load_dataset(fidelity.dataset, data_dir)
    if data.image_size[0] != data.image_size[1]:
        raise NasError(f"{fidelity.dataset}: images are {data.image_size[0]}x{data.image_size[1]}; "
                       f"square images only")
    splits = budget_splits(data.train_labels, fidelity.val_size, fidelity.subset)
    held_out = splits.confirm if getattr(fidelity, "validation", "search") == "confirmation" else splits.val
    train_images = data.train_images[splits.train]
    mean, std = channel_stats(train_images)
    return TrainingData(train_images, data.train_labels[splits.train], data.train_images[held_out],
                        data.train_labels[held_out], mean, std, data.num_classes, data.image_size[0],
                        data.fingerprint, getattr(fidelity, "validation", "search"), split_hash(held_out))


def split_hash(indices: torch.Tensor) -> str:
    """A short hash of a split's image indices (stored on each evaluation:
    which images validated it)."""

    return hashlib.sha256(indices.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:12]


def budget_splits(labels, val_size: int | None, subset: int | None):
    """The split every budget draws (seed 0, whatever the training seed):
    the search's validation images, the confirmation images (as many,
    disjoint) and the training images (``subset`` of the rest), so that the
    search, promote, ablate and train all hold both out of training and a
    design selected on the first is confirmed on the second."""
    size = val_size if val_size is not None else default_val_size(len(labels))
    return make_splits(labels, size, seed=0, subset=subset, confirm_size=size)


def build_seeded(cfg: ArchConfig, seed: int, runtime) -> torch.nn.Module:
    """The model of ``cfg`` with the initial weights of ``seed`` (as
    ``search.py train --seed`` builds it)."""
    torch.manual_seed(seed)
    return build_model(cfg).to(runtime.device)


def train_architecture(cfg: ArchConfig, data: TrainingData, fidelity, seed: int, runtime,
                       callback: RungCallback | None = None, model: torch.nn.Module | None = None,
                       progress=None, state_path: Path | None = None) -> TrainResult:
    """Train ``cfg`` at ``fidelity``'s budget with ``seed``: the seed sets the
    initial weights and the order and augmentation of the batches. ``model``:
    one already built with :func:`build_seeded` for this seed; ``progress``:
    the trainer's progress hook (a terminal status line); ``state_path``:
    where the trainer keeps its resumable state (a long training killed
    half-way continues from it)."""
    if model is None:
        model = build_seeded(cfg, seed, runtime)
    key = f"{cfg.structure_hash()}|{fidelity.budget_key()}|seed={seed}|{data.fingerprint}|{runtime.precision}"
    return train(model, data.train_images, data.train_labels, data.val_images, data.val_labels, data.mean,
                 data.std, fidelity.recipe(seed), runtime, callback=callback, progress=progress,
                 state_path=state_path, state_key=key)


def images_at(epochs: float, train_images: int, batch_size: int) -> int:
    """Images a training over ``train_images`` images in batches of
    ``batch_size`` has seen after ``epochs`` (the trainer's step count)."""
    batch = min(batch_size, train_images)
    return max(1, math.ceil(epochs * train_images / batch)) * batch


# --------------------------------------------------------------------------- stored evaluations


#: failures of one training that say something about the architecture (or
#: the machine), not a bug: stored as FAIL and not tried again
TRAINING_FAILURES = (DivergedError, MemoryError, torch.OutOfMemoryError)
INTERRUPTED = "interrupted during the evaluation"


def find_evaluation(study: optuna.Study, structure_hash: str, budget_key: str, seed: int,
                    include_failed: bool = False) -> optuna.trial.FrozenTrial | None:
    """The finished evaluation of this architecture, budget and seed, if
    any; with ``include_failed`` also one whose training failed (diverged,
    out of memory), which would fail again. Interrupted ones never count."""
    states = (TrialState.COMPLETE, TrialState.FAIL) if include_failed else (TrialState.COMPLETE,)
    for t in study.get_trials(deepcopy=False, states=states):
        a = t.user_attrs
        if (a.get("kind") == EVALUATION and a.get("structure_hash") == structure_hash
                and a.get("budget_key") == budget_key and a.get("seed") == seed
                and (t.state == TrialState.COMPLETE or a.get("training_failed"))):
            return t
    return None


def evaluate(study: optuna.Study, cfg: ArchConfig, fidelity, seed: int, data: TrainingData, runtime, *,
             role: str = "", extra_attrs: dict[str, Any] | None = None, state_dir: Path | None = None,
             on_trained: Callable[[optuna.Trial, torch.nn.Module], None] | None = None,
             progress=None, cost: float | None = None) -> optuna.trial.FrozenTrial:
    """Train ``cfg`` at ``fidelity``'s budget with ``seed`` and store it as a
    COMPLETE trial of ``study`` (values: validation accuracy and MACs; user
    attrs: ``rungs``, ``structure_hash``, ``budget``, ``budget_key``,
    ``seed``, ``role``, cost). An evaluation stored before is returned
    untouched. A training that fails for a reason of its own (divergence,
    out of memory) is stored as FAIL with the reason and raised as
    :class:`EvaluationFailed`; anything else (Ctrl-C, a bug) marks the trial
    FAIL and propagates with its traceback.

    ``state_dir``: keep the trainer's resumable state there while it trains
    (for long budgets: a killed evaluation continues from its last epoch
    boundary when asked again). ``on_trained(trial, model)``: called with the
    trained model before the trial is finished (Optuna takes artifacts, such
    as a checkpoint, only while a trial runs). ``progress``: the trainer's
    progress hook. ``cost``: the second value stored (default: the MACs;
    a latency study passes the architecture's ms per step)."""
    structure, budget_key = cfg.structure_hash(), fidelity.budget_key()
    done = find_evaluation(study, structure, budget_key, seed)
    if done is not None:
        return done
    model = build_seeded(cfg, seed, runtime)
    profiled = profile(model, data.image_size, device=runtime.device)
    trial = study.ask()
    rungs: list[list[float]] = []

    def at_rung(index: int, epochs: float, accuracy: float) -> bool:
        rungs.append([epochs, accuracy])
        trial.set_user_attr("rungs", rungs)
        return False

    state = None if state_dir is None else state_file(state_dir, structure, budget_key, seed)
    try:
        attrs = {"kind": EVALUATION, "role": role, "structure_hash": structure, "config": cfg.to_yaml(),
                 "budget": fidelity.as_dict(), "budget_key": budget_key, "seed": seed,
                 "device": runtime.device.type, "precision": runtime.precision, "macs": profiled["macs"],
                 "params": profiled["params"], "train_images": len(data.train_labels),
                 "validation": data.validation, "val_split": data.val_split, **(extra_attrs or {})}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if state is not None:
            state.parent.mkdir(parents=True, exist_ok=True)
        # the study's numerics plan (nas.kernels.plan; a plan from another kind of machine was refused or
        # allowed when the study was opened)
        with planned(study, trial, mix=True):
            result = train_architecture(cfg, data, fidelity, seed, runtime, callback=at_rung, model=model,
                                        progress=progress, state_path=state)
        if on_trained is not None:
            on_trained(trial, model)
    except TRAINING_FAILURES as exc:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("training_failed", True)
        study.tell(trial, state=TrialState.FAIL)
        if state is not None:  # it would fail again: never resumed
            state.unlink(missing_ok=True)
            _remove_if_empty(state.parent)
        raise EvaluationFailed(reason) from exc
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        trial.set_user_attr("fail_reason", INTERRUPTED if interrupted else
                            f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
        if not interrupted:
            trial.set_user_attr("traceback", traceback.format_exc()[-2000:])
        study.tell(trial, state=TrialState.FAIL)
        raise
    if state is not None:
        state.unlink(missing_ok=True)  # the result is about to be stored: nothing left to resume
        _remove_if_empty(state.parent)
    # every rung, also those measured before a resume (the callback above
    # only hears the rungs trained in this process)
    trial.set_user_attr("rungs", [[e, a] for e, a in result.rung_accuracies])
    trial.set_user_attr("images_trained", result.images_seen)
    trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
    # training and validation, summed over the runs a resumed training took
    trial.set_user_attr("wall_seconds", round(result.wall_seconds, 3))
    if result.resumed_from_step:
        trial.set_user_attr("resumed_from_step", result.resumed_from_step)
    trial.set_user_attr("val_accuracy", result.val_accuracy)
    study.tell(trial, [result.val_accuracy, float(profiled["macs"] if cost is None else cost)])
    return study.trials[trial.number]


def state_file(state_dir: Path, structure_hash: str, budget_key: str, seed: int) -> Path:
    """Where a long evaluation keeps its resumable state while it trains."""
    return Path(state_dir) / f"{structure_hash[:16]}-{budget_key}-seed{seed}.train-state.pt"


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another training's state), or already gone
        pass


class EvaluationFailed(Exception):
    """One evaluation could not finish; the reason is in its trial."""


#: the user attrs :func:`evaluate` writes about the training itself (not the command's links, such as a promoted
#: trial's proxy trial): what a copy into another study carries over
_TRAINING_ATTRS = ("kind", "structure_hash", "config", "budget", "budget_key", "seed", "device", "precision",
                   "macs", "params",
                   "train_images", "rungs", "images_trained", "train_seconds", "wall_seconds", "resumed_from_step",
                   "val_accuracy", "validation", "val_split", PLAN_ATTR)


def sibling_evaluations(study: optuna.Study) -> list[optuna.Study]:
    """The other studies of ``study``'s storage that hold evaluations on the
    same data (same fingerprint): a promote, an ablation or a calibration.
    A training they stored at the same budget and seed is the same
    experiment (the split depends only on the budget, the weights and batch
    order only on the seed), so :func:`run_jobs` copies it rather than
    spending the machine on it again; e.g. ``ablate`` of a promoted winner
    reuses the promote's trainings of the winner and of the baseline."""
    fingerprint = study.user_attrs.get("data_fingerprint")
    out = []
    for s in study._storage.get_all_studies():  # the studies' attrs only, not their trials
        if (fingerprint is None or s.study_name == study.study_name or s.user_attrs.get("kind") is None
                or s.user_attrs.get("data_fingerprint") != fingerprint):
            continue  # a search's study (kind None) evaluates at its own fidelity, never at these budgets
        out.append(optuna.load_study(study_name=s.study_name, storage=study._storage))
    return out


def copy_evaluation(study: optuna.Study, source: optuna.Study, done: optuna.trial.FrozenTrial, job: Job
                    ) -> optuna.trial.FrozenTrial:
    """Store ``done`` (a COMPLETE evaluation of ``source``) in ``study`` as
    ``job``'s result, with ``copied_from`` naming where it was trained (the
    original, when ``done`` is itself a copy)."""
    attrs = {k: done.user_attrs[k] for k in _TRAINING_ATTRS if k in done.user_attrs}
    origin = done.user_attrs.get("copied_from") or {"study": source.study_name, "trial": done.number}
    attrs.update({"role": job.role, **(job.extra_attrs or {}), "copied_from": origin})
    cost = float(attrs["macs"] if job.cost is None else job.cost)
    # its artifacts (a promoted training's checkpoint) live in the same storage's folder: shared, not copied
    # (Optuna refuses to change a finished trial's artifacts, so neither trial can drop the file)
    shared = {k: v for k, v in source._storage.get_trial_system_attrs(done._trial_id).items()
              if k.startswith("artifacts:")}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, values=[done.values[0], cost], user_attrs=attrs, system_attrs=shared,
        distributions={}, params={}))
    return study.get_trials(deepcopy=False)[-1]


# --------------------------------------------------------------------------- full budget, many trainings


def full_budget(dataset: str = "cifar10", epochs: float | None = None, subset: int | None = None,
                val_size: int | None = None):
    """The ``train`` command's budget as a fidelity, for ``promote`` and
    ``ablate``: its recipe (:class:`nas.training.train.Recipe`'s defaults: 50 epochs,
    batch 256, lr 0.4, one epoch of warm-up, no clipping) on every training
    image but the two held-out splits (``subset``: a stratified part of
    them), in one rung, validated on the confirmation images
    (:func:`budget_splits`): the same images whatever the training seed, and
    none of those the search chose on."""

    r = Recipe()
    return Fidelity(dataset=dataset, subset=subset, val_size=val_size,
                    rungs=[float(r.epochs if epochs is None else epochs)], eta=1, batch_size=r.batch_size, lr=r.lr,
                    warmup=r.warmup_epochs, grad_clip=r.grad_clip, seed=0, repeats=1, validation="confirmation")


#: the first training seed of each command that trains at the full budget: no
#: two of them (and no search, whose seeds start at its fidelity's seed, 0 by
#: default) train with the same seeds, so a confirmation never re-runs the
#: training that selected a design (a search trial's seed 0 rebuilt the proxy
#: trial's very weights) and ablate never copies the promote that chose its
#: config (calibrate's reference seeds are offset by 1000 likewise)
SEED_OFFSETS = {"promote": 2000, "ablate": 3000}


@dataclass
class Job:
    """One training of a many-training command: ``cfg`` with ``seed``."""

    cfg: ArchConfig
    seed: int
    role: str
    label: str  # how the progress lines name it
    extra_attrs: dict[str, Any] | None = None
    #: this job's budget and data, when not those of the whole run (calibrate's reference)
    budget: Any = None
    data: TrainingData | None = None
    #: the second value stored, when not the MACs (see :func:`evaluate`)
    cost: float | None = None


def run_jobs(study: optuna.Study, jobs: list[Job], budget, data: TrainingData | None, runtime,
             out: Callable[[str], None], *, state_dir: Path | None = None,
             on_trained: Callable[[optuna.Trial, torch.nn.Module], None] | None = None,
             progress: Callable[[], Callable[[int, int, float], None]] | None = None,
             sources: Sequence[optuna.Study] = (),
             copy_if: Callable[[optuna.Study, optuna.trial.FrozenTrial], bool] | None = None
             ) -> tuple[dict[tuple[str, str, int], optuna.trial.FrozenTrial], list[tuple[Job, str]]]:
    """Train every job not stored yet (an earlier run's results are
    reused, a training that failed before is not tried again), one progress
    line each. A job that one of ``sources`` (:func:`sibling_evaluations`)
    completed at the same budget and seed is copied from there instead (and
    only when ``copy_if(source, trial)``: e.g. with a checkpoint), unless it
    records another precision or kind of device than this run's (a training
    stored before evaluations recorded them is copied, and its line says so,
    as a resumed study counts every seed stored at its budget whatever the
    machine). ``progress()`` makes each training's progress hook (the
    CLI's bar or periodic lines). Returns ``{(structure hash, budget key,
    seed): trial}`` of the completed ones and ``(job, reason)`` per failed
    training."""
    done: dict[tuple[str, str, int], optuna.trial.FrozenTrial] = {}
    failed: list[tuple[Job, str]] = []
    started, attempted, copied = time.perf_counter(), 0, 0

    def key_of(job: Job) -> tuple[str, str, int]:
        return job.cfg.structure_hash(), (job.budget or budget).budget_key(), job.seed

    def stored(job: Job) -> optuna.trial.FrozenTrial | None:
        return find_evaluation(study, *key_of(job), include_failed=True)

    wanted = {key_of(j) for j in jobs}
    copyable: dict[tuple[str, str, int], tuple[optuna.Study, optuna.trial.FrozenTrial]] = {}
    for source in sources:  # read once: (structure hash, budget key, seed) -> a training there, originals first
        for t in sorted(source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                        key=lambda t: "copied_from" in t.user_attrs):
            a = t.user_attrs
            key = (a.get("structure_hash"), a.get("budget_key"), a.get("seed"))
            if (a.get("kind") == EVALUATION and key in wanted and key not in copyable
                    and a.get("device", runtime.device.type) == runtime.device.type
                    and a.get("precision", runtime.precision) == runtime.precision
                    and (copy_if is None or copy_if(source, t))):
                copyable[key] = (source, t)

    def elsewhere(job: Job) -> tuple[optuna.Study, optuna.trial.FrozenTrial] | None:
        return copyable.get(key_of(job))

    for i, job in enumerate(jobs, 1):
        key = key_of(job)
        trial = stored(job)
        if trial is None:
            _fail_lost(study, *key)  # a killed attempt of this study's own: trained again or copied below
        if trial is None and (found := elsewhere(job)) is not None:
            source, original = found
            if state_dir is not None:  # the killed attempt's half-done state is not needed either
                state_file(state_dir, *key).unlink(missing_ok=True)
            trial = copy_evaluation(study, source, original, job)
            copied += 1
            how = original.user_attrs.get("precision", "precision not recorded")
            out(f"[{i}/{len(jobs)}] {job.label} seed {job.seed}: val {trial.values[0]:.4f} (trained at this budget "
                f"by study {source.study_name!r}, trial {original.number}, {how}: copied, not trained again)")
        if trial is None:
            attempted += 1
            try:
                trial = evaluate(study, job.cfg, job.budget or budget, job.seed, job.data or data, runtime,
                                 role=job.role, extra_attrs=job.extra_attrs, state_dir=state_dir, on_trained=on_trained,
                                 cost=job.cost, progress=progress() if progress is not None else None)
            except EvaluationFailed as exc:
                failed.append((job, str(exc)))
                out(f"[{i}/{len(jobs)}] {job.label} seed {job.seed}: FAILED {exc}")
                continue
            left = sum(1 for j in jobs[i:] if stored(j) is None and elsewhere(j) is None)
            out(f"[{i}/{len(jobs)}] {job.label} seed {job.seed}: val {trial.values[0]:.4f} "
                f"({trial.user_attrs['train_seconds']:.0f} s; {(time.perf_counter() - started) / 60:.1f} min "
                f"elapsed, {left} trainings left)")
        elif trial.state == TrialState.FAIL:  # stored by an earlier run; it would fail again
            failed.append((job, f"{trial.user_attrs.get('fail_reason')} (trial {trial.number})"))
            continue
        done[key] = trial
    if attempted == 0 and copied == 0 and jobs:
        out(f"every training was stored already ({len(jobs)} trainings)")
    return done, failed


#: the fail reason of an evaluation whose process ended without finishing it
LOST = "lost: its process ended before the training finished (killed); trained again"


def _fail_lost(study: optuna.Study, structure_hash: str, budget_key: str, seed: int) -> None:
    """An evaluation of this job still RUNNING belongs to a run that was
    killed (SIGKILL, a power cut: no chance to store it as FAIL); it is
    failed now, as it is trained again. (One command at a time per study:
    a promote, ablate or calibrate is not run twice at once on one study.)"""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        a = t.user_attrs
        if (a.get("kind") == EVALUATION and a.get("structure_hash") == structure_hash
                and a.get("budget_key") == budget_key and a.get("seed") == seed):
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", LOST)
            study.tell(t.number, state=TrialState.FAIL)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std (None for one value)."""

    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def difference(a: list[float], b: list[float], seed_std) -> tuple[float, float | None, float | None]:
    """``mean(a) - mean(b)``, its standard error and the probability that it
    is above 0, from the one decision function :func:`nas.training.noise.gain`
    (``seed_std``: a :class:`nas.training.noise.SeedNoise`); None where one seed or
    no std leaves them unknown."""

    g = gain(a, b, seed_std)
    return g.delta, g.se, g.probability


def check_budget_args(epochs: float | None, subset: int | None, val_size: int | None, seeds: int,
                      max_seeds: int = 8) -> None:
    """One-line errors for the budget options of promote and ablate."""
    if epochs is not None and not (math.isfinite(epochs) and epochs > 0):
        raise NasError(f"--epochs: must be > 0, got {epochs:g}")
    if subset is not None and subset < 1:
        raise NasError(f"--subset: must be >= 1, got {subset}")
    if val_size is not None and val_size < 1:
        raise NasError(f"--val-size: must be >= 1, got {val_size}")
    if not 1 <= seeds <= max_seeds:
        raise NasError(f"--seeds: must be 1 to {max_seeds}, got {seeds}")


def check_config_fits(cfg: ArchConfig, images: ImageData, dataset: str, source: str) -> None:
    """The config's classes and input size must be the dataset's (one line
    naming the config otherwise)."""

    if images.num_classes != cfg.num_classes:
        raise ConfigError(f"{source}: num_classes is {cfg.num_classes} but {dataset} has {images.num_classes} classes")
    if images.image_size != (cfg.input_size, cfg.input_size):
        raise ConfigError(f"{source}: input_size is {cfg.input_size} but {dataset} images are "
                          f"{images.image_size[0]}x{images.image_size[1]}")
