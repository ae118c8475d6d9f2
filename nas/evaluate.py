"""One evaluation: train this architecture at this budget with this seed
(design.md section 6a). Everything that trains more than a search trial
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

import math
import time
import traceback
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from .config import ArchConfig
from .data import ImageData, channel_stats, default_val_size, load_dataset, make_splits
from .errors import NasError
from .models import build_model
from .profile import profile
from .train import DivergedError, RungCallback, TrainResult, train

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


def load_training_data(fidelity, data_dir: str | None = None, images: ImageData | None = None) -> TrainingData:
    """``fidelity``'s split (subset, validation size) of its dataset; pass
    ``images`` to reuse a dataset already loaded."""
    data = images if images is not None else load_dataset(fidelity.dataset, data_dir)
    if data.image_size[0] != data.image_size[1]:
        raise NasError(f"{fidelity.dataset}: images are {data.image_size[0]}x{data.image_size[1]}; "
                       f"square images only")
    val_size = fidelity.val_size if fidelity.val_size is not None else default_val_size(len(data.train_labels))
    splits = make_splits(data.train_labels, val_size, seed=0, subset=fidelity.subset)
    train_images = data.train_images[splits.train]
    mean, std = channel_stats(train_images)
    return TrainingData(train_images, data.train_labels[splits.train], data.train_images[splits.val],
                        data.train_labels[splits.val], mean, std, data.num_classes, data.image_size[0],
                        data.fingerprint)


def build_seeded(cfg: ArchConfig, seed: int, runtime) -> torch.nn.Module:
    """The model of ``cfg`` with the initial weights of ``seed`` (as
    ``search.py train --seed`` builds it)."""
    torch.manual_seed(seed)
    return build_model(cfg).to(runtime.device)


def train_architecture(cfg: ArchConfig, data: TrainingData, fidelity, seed: int, runtime,
                       callback: RungCallback | None = None, model: torch.nn.Module | None = None,
                       progress=None) -> TrainResult:
    """Train ``cfg`` at ``fidelity``'s budget with ``seed``: the seed sets the
    initial weights and the order and augmentation of the batches. ``model``:
    one already built with :func:`build_seeded` for this seed; ``progress``:
    the trainer's progress hook (a terminal status line)."""
    if model is None:
        model = build_seeded(cfg, seed, runtime)
    return train(model, data.train_images, data.train_labels, data.val_images, data.val_labels, data.mean,
                 data.std, fidelity.recipe(seed), runtime, callback=callback, progress=progress)


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
             role: str = "", extra_attrs: dict[str, Any] | None = None) -> optuna.trial.FrozenTrial:
    """Train ``cfg`` at ``fidelity``'s budget with ``seed`` and store it as a
    COMPLETE trial of ``study`` (values: validation accuracy and MACs; user
    attrs: ``rungs``, ``structure_hash``, ``budget``, ``budget_key``,
    ``seed``, ``role``, cost). An evaluation stored before is returned
    untouched. A training that fails for a reason of its own (divergence,
    out of memory) is stored as FAIL with the reason and raised as
    :class:`EvaluationFailed`; anything else (Ctrl-C, a bug) marks the trial
    FAIL and propagates with its traceback."""
    structure, budget_key = cfg.structure_hash(), fidelity.budget_key()
    done = find_evaluation(study, structure, budget_key, seed)
    if done is not None:
        return done
    model = build_seeded(cfg, seed, runtime)
    cost = profile(model, data.image_size, device=runtime.device)
    trial = study.ask()
    rungs: list[list[float]] = []

    def at_rung(index: int, epochs: float, accuracy: float) -> bool:
        rungs.append([epochs, accuracy])
        trial.set_user_attr("rungs", rungs)
        return False

    started = time.perf_counter()
    try:
        attrs = {"kind": EVALUATION, "role": role, "structure_hash": structure, "config": cfg.to_yaml(),
                 "budget": fidelity.as_dict(), "budget_key": budget_key, "seed": seed, "macs": cost["macs"],
                 "params": cost["params"], "train_images": len(data.train_labels), **(extra_attrs or {})}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        result = train_architecture(cfg, data, fidelity, seed, runtime, callback=at_rung, model=model)
    except TRAINING_FAILURES as exc:
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("training_failed", True)
        study.tell(trial, state=TrialState.FAIL)
        raise EvaluationFailed(reason) from exc
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        trial.set_user_attr("fail_reason", INTERRUPTED if interrupted else
                            f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
        if not interrupted:
            trial.set_user_attr("traceback", traceback.format_exc()[-2000:])
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr("images_trained", result.images_seen)
    trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
    trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
    trial.set_user_attr("val_accuracy", result.val_accuracy)
    study.tell(trial, [result.val_accuracy, float(cost["macs"])])
    return study.trials[trial.number]


class EvaluationFailed(Exception):
    """One evaluation could not finish; the reason is in its trial."""
