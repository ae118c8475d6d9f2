"""Retrain the exact model of an architecture YAML at full budget
(``python search.py train CONFIG.yaml``), report validation and test
accuracy, and save a checkpoint and a results file next to the YAML.

The test split is touched here and nowhere in the search.
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

from .config import ArchConfig, load_config
from .data import DEFAULT_VAL_SIZE, channel_stats, load_dataset, make_splits
from .device import configure_threads, resolve_runtime
from .errors import ConfigError, NasError, one_line
from .models import build_model
from .provenance import versions
from .train import Recipe, evaluate, train

#: 2: CBAM stacks its pooled maps [max, mean], PSA concatenates its parts
#: last first and the DANet gate adds x once (the official code's choices);
#: format-1 checkpoints were saved before that (see _upgrade_format_1)
CHECKPOINT_FORMAT = 2


def train_config(config_path: str | Path, *, epochs: float | None = None, batch_size: int | None = None,
                 lr: float | None = None, weight_decay: float | None = None, seed: int = 0,
                 val_size: int | None = None, subset: int | None = None,
                 data: str | None = None, dataset: str | None = None, device: str | None = None,
                 precision: str = "auto", output: str | Path | None = None,
                 progress: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
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
    if images.num_classes != cfg.num_classes:
        raise ConfigError(f"{path}: num_classes is {cfg.num_classes} but {dataset} has {images.num_classes} classes")
    if images.image_size != (cfg.input_size, cfg.input_size):
        raise ConfigError(f"{path}: input_size is {cfg.input_size} but {dataset} images are "
                          f"{images.image_size[0]}x{images.image_size[1]}")
    splits = make_splits(images.train_labels, DEFAULT_VAL_SIZE if val_size is None else val_size,
                         seed=seed, subset=subset, allow_no_val=True)
    mean, std = channel_stats(images.train_images, splits.train)

    torch.manual_seed(seed)
    model = build_model(cfg)
    # A killed run resumes from here (same model, data, split and recipe).
    state_file = path.with_name(path.stem + ".train-state.pt")
    run_key = (f"{cfg.structure_hash()}|{images.fingerprint}|seed={seed}|val={splits.val.numel()}|"
               f"train={splits.train.numel()}|{runtime.precision}|{dataclasses.asdict(recipe)}")
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
        "val_accuracy": None if math.isnan(result.val_accuracy) else result.val_accuracy,
        "test_accuracy": test_accuracy,
        "test_accuracy_flip_tta": test_accuracy_flip,
        "rung_accuracies": [[e, None if math.isnan(a) else a] for e, a in result.rung_accuracies],
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "resumed_from_step": result.resumed_from_step,
        "images_per_second": result.images_per_second,
        "precision": result.precision,
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


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: ArchConfig, mean, std) -> None:
    """A plain dict of tensors and strings, loadable with ``weights_only=True``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "state_dict": state, "structure_hash": cfg.structure_hash(),
               "config_yaml": cfg.to_yaml(), "mean": list(mean), "std": list(std)}
    tmp = Path(str(path) + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str | Path, cfg: ArchConfig | None = None) -> tuple[torch.nn.Module, dict]:
    """Model with the checkpoint's weights. With ``cfg``, the checkpoint must
    be of that architecture (same structural hash)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NasError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # unpickling refused or file corrupt: one clear line
        raise NasError(f"cannot load checkpoint {path}: {one_line(exc)}") from None
    saved_cfg = ArchConfig.from_yaml(payload["config_yaml"], source=str(path))
    if cfg is not None and cfg.structure_hash() != payload["structure_hash"]:
        raise ConfigError(f"checkpoint {path} is of architecture {payload['structure_hash']}, "
                          f"the config is {cfg.structure_hash()}")
    model = build_model(cfg or saved_cfg)
    state = payload["state_dict"]
    if payload.get("format", 1) == 1:
        state = _upgrade_format_1(model, state, path)
    model.load_state_dict(state)
    return model, payload


def _upgrade_format_1(model: torch.nn.Module, state: dict, path: str | Path) -> dict:
    """Weights saved before CBAM, PSA and DANet followed the official code.
    CBAM's change is a swap of its spatial conv's two input maps, so its
    weights are converted exactly; PSA's reversed part order and DANet's
    single skip change what the rest of the block sees, which no weight
    conversion undoes: such a checkpoint is refused."""
    from .attention import CBAM, DualAttention, PSAConv

    state = dict(state)
    for name, module in model.named_modules():
        if isinstance(module, CBAM):
            key = f"{name}.spatial.weight"
            state[key] = state[key].flip(1)  # was [mean, max], is [max, mean]
        elif isinstance(module, (PSAConv, DualAttention)):
            what = "psa" if isinstance(module, PSAConv) else "danet"
            raise NasError(f"checkpoint {path} was saved by an earlier version whose {what} module computed "
                           f"something else ({name}); retrain it: python search.py train CONFIG.yaml")
    return state
