"""The proxy trainer: every trial of the search runs through :func:`train`.

Speed on a small CPU comes from not doing needless work:

* the whole training set stays in memory as uint8, reflect-padded once
  (N x 40 x 40 x 3, channels-last), so a batch is one gather: random crop
  and horizontal flip are folded into the gather's indices, per sample, with
  no PIL, no DataLoader workers and no per-sample Python;
* the model and its inputs are channels_last, the layout oneDNN's kernels
  want, and run under bf16 autocast where the CPU has bf16 units;
* normalisation happens once per batch on the gathered uint8 values.

Recipe: SGD with Nesterov momentum, linear warm-up then linear decay to zero
over the whole budget (the one-cycle shape of Smith & Topin, arXiv
1708.07120), label smoothing, weight decay on conv and linear weights only
(not on norms and biases). The budget is epochs over the training subset,
split into rungs; after each rung the validation accuracy goes to a callback
that may stop the run. Long runs can keep a state file (model, optimiser,
random generator, position in the schedule) written at epoch boundaries, so
a run that is killed resumes where it was and continues exactly as it would
have (same batches, same augmentation).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..device import Runtime, resolve_runtime
from ..errors import one_line
from .compiled_step import choose_step

#: ``callback(rung_index, epochs_done, val_accuracy) -> bool``: True stops training
RungCallback = Callable[[int, float, float], bool]


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite. ``images_seen`` and
    ``train_seconds`` say what the run had cost by then (compute counts)."""

    def __init__(self, message: str, images_seen: int = 0, train_seconds: float = 0.0) -> None:
        super().__init__(message)
        self.images_seen, self.train_seconds = images_seen, train_seconds


@dataclass
class Recipe:
    """How to train: budget and optimiser settings."""

    epochs: float = 50.0
    #: alternative budget: images to train on (replaces ``epochs`` when set),
    #: so trials on subsets of different sizes can get the same compute
    images: int | None = None
    #: epochs after which validation accuracy is measured and reported; the
    #: last rung is always ``epochs``. Empty: only at the end.
    rungs: Sequence[float] = ()
    batch_size: int = 256
    lr: float = 0.4  # peak learning rate for batch_size (linear scaling: 0.1 per 64 images)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    #: clip the global gradient norm to this (None: no clipping). Proxy runs
    #: use it: a few architectures (e.g. SK with depthwise branches) otherwise
    #: blow up in their first steps at the peak learning rate.
    grad_clip: float | None = None
    eval_batch_size: int = 1000
    pad: int = 4
    seed: int = 0

    def budget_epochs(self, train_images: int) -> float:
        """The budget in epochs over ``train_images`` images."""
        return self.images / train_images if self.images is not None else self.epochs

    def rung_epochs(self, train_images: int | None = None) -> list[float]:
        total = self.epochs if train_images is None else self.budget_epochs(train_images)
        return sorted({float(r) for r in self.rungs if 0 < r < total} | {float(total)})


@dataclass
class TrainResult:
    val_accuracy: float
    rung_accuracies: list[tuple[float, float]]  # (epochs done, val accuracy)
    stopped_early: bool
    epochs_done: float
    images_seen: int
    train_seconds: float  # training steps only, evaluation excluded
    eval_seconds: float
    precision: str
    history: list[dict] = field(default_factory=list)
    resumed_from_step: int = 0  # > 0: continued from a state file at this step
    wall_seconds: float = 0.0  # the whole run, evaluation included, summed over resumes

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0


# --------------------------------------------------------------------------- data on tensors


class TensorBatches:
    """Training images as one padded uint8 tensor; :meth:`batch` returns a
    normalised, augmented float batch in channels_last layout."""

    def __init__(self, images: Tensor, labels: Tensor, mean: Sequence[float], std: Sequence[float],
                 pad: int, device: torch.device) -> None:
        # N x C x H x W uint8 -> N x (H+2p) x (W+2p) x C, reflect-padded once
        n, c, h, w = images.shape
        padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect") if pad else images.float()
        self.images = padded.to(torch.uint8).permute(0, 2, 3, 1).contiguous().to(device)
        self.labels = labels.to(device)
        self.size, self.pad, self.channels = (h, w), pad, c
        self.scale = (1.0 / (255.0 * torch.tensor(std))).to(device)
        self.shift = (-torch.tensor(mean) / torch.tensor(std)).to(device)
        self._rows = torch.arange(h, device=device)
        self._cols = torch.arange(w, device=device)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: Tensor, generator: torch.Generator | None, augment: bool = True) -> tuple[Tensor, Tensor]:
        b = indices.numel()
        p = self.pad
        if augment and p:
            dy = torch.randint(0, 2 * p + 1, (b, 1), generator=generator).to(indices.device)
            dx = torch.randint(0, 2 * p + 1, (b, 1), generator=generator).to(indices.device)
        else:
            dy = dx = torch.full((b, 1), p, device=indices.device)
        rows = dy + self._rows  # b x H
        cols = dx + self._cols  # b x W
        if augment:
            flip = torch.rand(b, 1, generator=generator).to(indices.device) < 0.5
            cols = torch.where(flip, cols.flip(1), cols)
        # one gather does crop and flip for every sample: b x H x W x C
        x = self.images[indices.view(b, 1, 1), rows.view(b, -1, 1), cols.view(b, 1, -1)]
        x = x.float().mul_(self.scale).add_(self.shift)
        # b x H x W x C viewed as b x C x H x W is exactly the channels_last layout
        return x.permute(0, 3, 1, 2), self.labels[indices]


def normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 N x C x H x W -> normalised float, channels_last."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1) * 255
    return ((images.float() - m) / s).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, mean: Sequence[float], std: Sequence[float],
             runtime: Runtime | None = None, batch_size: int = 1000, flip: bool = False) -> float:
    """Top-1 accuracy in eval mode over uint8 ``images``. ``flip``: average
    the softmax of each image and its mirror image (test-time augmentation
    with the one transform the training used that keeps the whole image)."""
    runtime = runtime or resolve_runtime()
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, images.shape[0], batch_size):
            x = normalise(images[start:start + batch_size].to(runtime.device), mean, std)
            with runtime.autocast():
                scores = model(x).float()
                if flip:
                    scores = scores.softmax(1) + model(x.flip(3)).float().softmax(1)
            pred = scores.argmax(1)
            correct += (pred == labels[start:start + batch_size].to(runtime.device)).sum().item()
    finally:
        model.train(was_training)
    return correct / max(1, images.shape[0])


# --------------------------------------------------------------------------- optimiser


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights only: decaying BN scales and
    biases only fights the normalisation (Goyal et al., arXiv 1706.02677)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


# --------------------------------------------------------------------------- resumable state

STATE_FORMAT = 1


def _save_state(path: Path, key: str, model: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator,
                scaler: torch.amp.GradScaler | None, step: int, progress: dict) -> None:
    payload = {"format": STATE_FORMAT, "key": key, "step": step, "model": model.state_dict(),
               "optimizer": opt.state_dict(), "generator": generator.get_state(),
               "scaler": scaler.state_dict() if scaler is not None else {}, **progress}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous state intact


def saved_progress(path: str | os.PathLike, key: str) -> dict | None:
    """Where the run ``key`` kept in state file ``path`` stands (``step``,
    ``wall_seconds``, ``train_seconds``, ``rung_accuracies``): what
    :func:`train` will resume from, or None where it will start over. ``key``
    is the caller's ``state_key``; the schedule part train() adds is not
    compared here (a state of the same caller key and another schedule is
    refused by train(), which then starts over: pass one schedule per file)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # absent or unreadable: train() says so and starts over
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or \
            not str(state.get("key", "")).startswith(key + "|images="):
        return None
    return {k: state[k] for k in ("step", "wall_seconds", "train_seconds", "rung_accuracies") if k in state}


def _load_state(path: Path, key: str) -> dict | None:
    """The state saved for the run ``key``, or None if there is none (or it
    belongs to another run, which the caller is told about)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged or foreign file: start over, but say so
        print(f"note: cannot read the training state {path} ({one_line(exc)}); starting over", flush=True)
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("key") != key:
        print(f"note: {path} holds the state of another run (other recipe, data or model); starting over",
              flush=True)
        return None
    return state


# --------------------------------------------------------------------------- the loop


def train(model: nn.Module, train_images: Tensor, train_labels: Tensor, val_images: Tensor, val_labels: Tensor,
          mean: Sequence[float], std: Sequence[float], recipe: Recipe | None = None,
          runtime: Runtime | None = None, callback: RungCallback | None = None,
          progress: Callable[[int, int, float], None] | None = None,
          state_path: str | os.PathLike | None = None, state_key: str = "",
          state_interval: float = 60.0) -> TrainResult:
    """Train ``model`` in place on uint8 ``train_images`` and report
    validation accuracy at each rung.

    ``progress(step, total_steps, loss)`` is called every few steps (for a
    progress bar); ``callback`` after each rung (True stops the run).
    ``state_path``: keep the run's state there, written at the first epoch
    boundary at least ``state_interval`` seconds after the last write, and
    resume from it when it holds the same run (``state_key`` names the run:
    model, data and recipe; the schedule's length is added here). The caller
    removes it once the result is safe.
    Raises :class:`DivergedError` on a non-finite loss.
    """
    recipe = recipe or Recipe()
    runtime = runtime or resolve_runtime()
    dev = runtime.device
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)

    model.to(dev).to(memory_format=torch.channels_last).train()
    data = TensorBatches(train_images, train_labels, mean, std, recipe.pad, dev)
    n = len(data)
    batch_size = min(recipe.batch_size, n)
    steps_per_epoch = n / batch_size
    if recipe.images is not None and recipe.images < 1:
        raise ValueError(f"images budget must be >= 1, got {recipe.images}")
    total_steps = max(1, math.ceil(recipe.budget_epochs(n) * steps_per_epoch))
    rung_steps = [max(1, min(total_steps, math.ceil(e * steps_per_epoch))) for e in recipe.rung_epochs(n)]
    warmup = min(total_steps, max(1, round(recipe.warmup_epochs * steps_per_epoch)))

    opt = torch.optim.SGD(_param_groups(model, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=True)
    scaler = torch.amp.GradScaler(dev.type) if runtime.needs_grad_scaler else None
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    order = torch.empty(0, dtype=torch.long)
    cursor = 0
    rung_acc: list[tuple[float, float]] = []
    history: list[dict] = []
    train_seconds = eval_seconds = 0.0
    stopped = False
    step = 0
    state_file = Path(state_path) if state_path is not None else None
    run_key = f"{state_key}|images={n}|batch={batch_size}|steps={total_steps}|rungs={rung_steps}"
    saved = _load_state(state_file, run_key) if state_file is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        generator.set_state(saved["generator"])
        step, train_seconds, eval_seconds = saved["step"], saved["train_seconds"], saved["eval_seconds"]
        rung_acc = [tuple(r) for r in saved["rung_accuracies"]]
        history = list(saved["history"])
        print(f"resuming from {state_file}: step {step} of {total_steps} (epoch {step / steps_per_epoch:.2f})",
              flush=True)
    resumed_from = step
    loss_of = None
    # wall time of the whole run, kept across resumes (a benchmark's clock
    # continues from it: the work lost to a kill is redone and counted once)
    wall_offset = saved.get("wall_seconds", 0.0) if saved is not None else 0.0
    last_save = wall_started = time.perf_counter()
    started = time.perf_counter()
    for rung_index, end in enumerate(rung_steps):
        if end <= step:  # a rung finished before the run was resumed
            continue
        while step < end:
            if cursor + batch_size > order.numel():  # next epoch: a fresh permutation, drop the remainder
                if state_file is not None and step > resumed_from and (
                        time.perf_counter() - last_save >= state_interval):
                    now = time.perf_counter()
                    _save_state(state_file, run_key, model, opt, generator, scaler, step, {
                        "train_seconds": train_seconds + now - started, "eval_seconds": eval_seconds,
                        "wall_seconds": wall_offset + now - wall_started,
                        "rung_accuracies": [list(r) for r in rung_acc], "history": history})
                    last_save = now
                order = torch.randperm(n, generator=generator)
                cursor = 0
            idx = order[cursor:cursor + batch_size].to(dev)
            cursor += batch_size
            x, y = data.batch(idx, generator)
            if loss_of is None:  # this process's first step: eager, or compiled for a long run
                loss_of = choose_step(model, criterion, x, y, runtime, total_steps - step,
                                      out=lambda line: print(line, flush=True))
            lr = _lr_at(step, total_steps, warmup, recipe.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            with runtime.autocast():
                loss = loss_of(x, y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise DivergedError(
                    f"loss became {loss_value} at step {step + 1} of {total_steps} "
                    f"(epoch {(step + 1) / steps_per_epoch:.2f}, lr {lr:.4g})",
                    images_seen=(step + 1) * batch_size, train_seconds=train_seconds + time.perf_counter() - started)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if recipe.grad_clip is not None:
                    scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                if recipe.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                opt.step()
            step += 1
            if progress is not None and (step % 10 == 0 or step == total_steps):
                progress(step, total_steps, loss_value)
        train_seconds += time.perf_counter() - started
        t0 = time.perf_counter()
        # no validation images (a final run on the whole training set): nan
        acc = (evaluate(model, val_images, val_labels, mean, std, runtime, recipe.eval_batch_size)
               if len(val_labels) else math.nan)
        eval_seconds += time.perf_counter() - t0
        epochs_done = step / steps_per_epoch
        rung_acc.append((epochs_done, acc))
        history.append({"rung": rung_index, "epochs": epochs_done, "val_accuracy": acc, "step": step,
                        "train_seconds": train_seconds})
        wants_stop = callback is not None and callback(rung_index, epochs_done, acc)
        if wants_stop and rung_index < len(rung_steps) - 1:
            stopped = True
            break
        started = time.perf_counter()
    return TrainResult(
        val_accuracy=rung_acc[-1][1],
        rung_accuracies=rung_acc,
        stopped_early=stopped,
        epochs_done=step / steps_per_epoch,
        images_seen=step * batch_size,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        precision=runtime.precision,
        history=history,
        resumed_from_step=resumed_from,
        wall_seconds=wall_offset + time.perf_counter() - wall_started,
    )
