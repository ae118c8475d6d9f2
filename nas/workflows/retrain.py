"""Retrain the exact model of an architecture YAML at full budget
(``python search.py train CONFIG.yaml``), report validation and test
accuracy, and save a checkpoint and a results file next to the YAML.

The test split is touched here and nowhere in the search. Validation is on
the confirmation images of :func:`nas.training.evaluate.budget_splits` (drawn with
seed 0 whatever the training seed, so ``train --seed S`` and ``promote``
validate on the same images), and training excludes them and the search's
validation images; ``val_size`` 0 holds nothing out.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from ..device import configure_threads, resolve_runtime
from ..errors import NasError
from ..kernels.plan import PLAN_ATTR, PlanFile, RunRecord, planned
from ..model.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint  # noqa: F401 (also this module's API)
from ..model.config import load_config
from ..model.network import build_model
from ..provenance import versions
from ..training.datasets import load_dataset
from ..training.evaluate import budget_splits, check_config_fits
from ..training.splits import Splits, channel_stats, make_splits
from ..training.train import Recipe, evaluate, train


def train_splits(labels, val_size: int | None = None, subset: int | None = None) -> Splits:
    """The images ``train`` trains and validates on, whatever its seed:
    ``.val`` is the confirmation split of :func:`nas.training.evaluate.budget_splits`
    (the images ``promote`` and ``ablate`` validate on at the same
    ``val_size``; ``None``: the default, 5,000 or a tenth of a smaller
    training set), ``.train`` every training image but that split and the
    search's validation images (``subset``: a stratified part of them).
    ``val_size`` 0: nothing held out, every training image (or ``subset``
    of them) is trained on."""
    if val_size is not None and val_size <= 0:  # 0: none held out (a negative size is refused there)
        splits = make_splits(labels, val_size, seed=0, subset=subset, allow_no_val=True)
        return Splits(train=splits.train, val=splits.val)
    splits = budget_splits(labels, val_size, subset)
    return Splits(train=splits.train, val=splits.confirm)


def train_config(config_path: str | Path, *, epochs: float | None = None, batch_size: int | None = None,
                 lr: float | None = None, weight_decay: float | None = None, seed: int = 0,
                 val_size: int | None = None, subset: int | None = None,
                 data: str | None = None, dataset: str | None = None, device: str | None = None,
                 precision: str = "auto", output: str | Path | None = None,
                 progress: Callable[[int, int, float], None] | None = None,
                 mix_numerics: bool = False) -> dict[str, Any]:
    recipe = Recipe(seed=seed)  # checked before any data is loaded
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("weight_decay", weight_decay)):
        if value is not None:
            zero_allowed = key == "weight_decay"
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
                raise NasError(f"--{key.replace('_', '-')}: must be {'>= 0' if zero_allowed else '> 0'}, got {value}")
            setattr(recipe, key, value)
    path = Path(config_path)
    cfg = load_config(path)
    dataset = dataset or cfg.meta.get("dataset", "cifar10")
    runtime = resolve_runtime(device, precision)
    threads = configure_threads()

    images = load_dataset(dataset, root=data)
    check_config_fits(cfg, images, dataset, str(path))
    splits = train_splits(images.train_labels, val_size, subset)  # the same images whatever the seed
    mean, std = channel_stats(images.train_images, splits.train)

    torch.manual_seed(seed)
    model = build_model(cfg)
    # A killed run resumes from here (same model, data, split and recipe).
    state_file = path.with_name(path.stem + ".train-state.pt")
    run_key = (f"{cfg.structure_hash()}|{images.fingerprint}|seed={seed}|val={splits.val.numel()}|"
               f"train={splits.train.numel()}|split=budget|{runtime.precision}|{dataclasses.asdict(recipe)}")
    # numerics decided once per config and machine kind: the kernel choices of the first train of this config
    # are kept beside it and every later train takes them (nas.kernels.plan); the results record them
    plan_file = PlanFile(path.with_name(path.stem + ".numerics.yaml"))
    used = RunRecord()
    with planned(plan_file, used, mix=mix_numerics):
        result = train(model, images.train_images[splits.train], images.train_labels[splits.train],
                       images.train_images[splits.val], images.train_labels[splits.val], mean, std,
                       recipe, runtime, progress=progress, state_path=state_file, state_key=run_key)
    started = time.perf_counter()
    test_accuracy = evaluate(model, images.test_images, images.test_labels, mean, std, runtime,
                             recipe.eval_batch_size)
    test_accuracy_flip = evaluate(model, images.test_images, images.test_labels, mean, std, runtime,
                                  recipe.eval_batch_size, flip=True)
    # training and validation over every resume, then the test evaluations
    wall = result.wall_seconds + time.perf_counter() - started

    checkpoint = Path(output) if output else path.with_suffix(".pt")
    save_checkpoint(checkpoint, model, cfg, mean, std)
    summary = {
        "config": str(path),
        "structure_hash": cfg.structure_hash(),
        "dataset": dataset,
        "data_fingerprint": images.fingerprint,
        "seed": seed,
        # the whole recipe (epochs, batch size, lr, ...), so the run can be repeated exactly
        "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(recipe).items()},
        "train_images": int(splits.train.numel()),
        "val_images": int(splits.val.numel()),
        # the confirmation images of nas.training.evaluate.budget_splits (as promote's), or none held out
        "validation": "confirmation" if splits.val.numel() else "none",
        "val_accuracy": None if math.isnan(result.val_accuracy) else result.val_accuracy,
        "test_accuracy": test_accuracy,
        "test_accuracy_flip_tta": test_accuracy_flip,
        "rung_accuracies": [[e, None if math.isnan(a) else a] for e, a in result.rung_accuracies],
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "resumed_from_step": result.resumed_from_step,
        "images_per_second": result.images_per_second,
        "precision": result.precision,
        # the kernel choices it trained with (formulation, fp32) and the file that keeps them
        "numerics": {**used.get(PLAN_ATTR, {}), "plan_file": str(plan_file.path)} if used else None,
        "device": str(runtime.device),
        "threads": threads,
        "versions": versions(),
        "checkpoint": str(checkpoint),
    }
    results_file = path.with_name(path.stem + ".results.yaml")
    results_file.write_text(yaml.safe_dump(summary, sort_keys=False))
    state_file.unlink(missing_ok=True)  # the result is saved: nothing left to resume
    summary["results_file"] = str(results_file)
    return summary
