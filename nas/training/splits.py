"""Validation, confirmation and training-subset splits of a dataset's training
images, stratified and fixed by a seed, and per-channel statistics
(docs/design.md section 6a). The test split is never touched here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DataError

# Validation images held out of CIFAR's 50,000 training images (docs/design.md 6).
DEFAULT_VAL_SIZE = 5000


@dataclass(eq=False)
class Splits:
    """Sorted int64 indices into the training split: the images trained on,
    the search's validation images and (``confirm_size`` > 0) the
    confirmation images that ``promote``, ``ablate`` and ``train`` validate
    on, disjoint from the search's (docs/design.md section 6a)."""

    train: torch.Tensor
    val: torch.Tensor
    confirm: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))


# --------------------------------------------------------------------------
# splits and statistics


def default_val_size(num_train: int) -> int:
    """DEFAULT_VAL_SIZE, or a tenth of a training set smaller than 50,000."""
    return max(1, min(DEFAULT_VAL_SIZE, num_train // 10))


def make_splits(labels, val_size: int, seed: int = 0, subset: int | None = None, *,
                allow_no_val: bool = False, confirm_size: int = 0) -> Splits:
    """Stratified validation split of the training set, and optionally a
    stratified subset of what remains for training. ``allow_no_val``:
    ``val_size`` 0 is allowed and holds nothing out (a final training run on
    every training image; a search always needs a validation split).

    Each class gets a share of ``val_size`` (and of ``subset``) proportional
    to its frequency, rounded by largest remainder so the total is exact.
    Indices are drawn with a torch.Generator seeded with ``seed``; the
    validation set does not depend on ``subset``, and for one seed a smaller
    subset is contained in a larger one (up to rounding of the shares).

    ``confirm_size`` > 0 holds out a second stratified split, the
    confirmation images, drawn right after the validation images of each
    class (so the validation split is the same with or without it) and kept
    out of the training images too: a design chosen on the validation images
    is confirmed on images that played no part in choosing it.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    n = labels.numel()
    _check_count("val_size", val_size, n - 1, f"the training set has {n} images and keeps at least one",
                 minimum=0 if allow_no_val else 1)
    if confirm_size:
        _check_count("confirm_size", confirm_size, n - 1 - val_size,
                     f"{n - val_size} images remain after the validation split and training keeps at least one")

    generator = torch.Generator().manual_seed(int(seed))
    _, counts = torch.unique(labels, return_counts=True)
    by_class = torch.split(torch.argsort(labels, stable=True), counts.tolist())
    val_parts, confirm_parts, rest = [], [], []
    confirm_shares = _allocate(counts.tolist(), confirm_size)
    for indices, k, c in zip(by_class, _allocate(counts.tolist(), val_size), confirm_shares):
        shuffled = indices[torch.randperm(len(indices), generator=generator)]
        val_parts.append(shuffled[:k])
        confirm_parts.append(shuffled[k:k + c])
        rest.append(shuffled[k + c:])

    if subset is not None:
        available = n - val_size - confirm_size
        why = f"{available} training images remain after the validation split"
        _check_count("subset", subset, available, why)
        # The rest is already in random order, so a prefix is a random sample.
        rest = [r[:k] for r, k in zip(rest, _allocate([len(r) for r in rest], subset))]
    return Splits(train=torch.cat(rest).sort().values, val=torch.cat(val_parts).sort().values,
                  confirm=torch.cat(confirm_parts).sort().values)


def _allocate(counts: list[int], total: int) -> list[int]:
    """Split `total` over classes in proportion to `counts`, largest
    remainder first (ties: lower class first).  Exact integer arithmetic; no
    share exceeds its count as long as total <= sum(counts)."""
    n = sum(counts)
    shares = [total * c // n for c in counts]
    remainders = [total * c % n for c in counts]
    for i in sorted(range(len(counts)), key=lambda i: (-remainders[i], i))[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _check_count(arg: str, value, maximum: int, why: str, minimum: int = 1) -> None:
    if maximum < minimum:
        raise DataError(f"{arg} cannot be chosen: {why}")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value <= maximum:
        raise DataError(f"{arg} must be an integer from {minimum} to {maximum} ({why}), got {value!r}")


# Values per chunk in channel_stats: 16 MB of int32, whatever the image size.
_STATS_CHUNK_VALUES = 1 << 22


def channel_stats(
    images: torch.Tensor, indices: torch.Tensor | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std on the 0..1 scale of uint8
    images N x C x H x W, or of ``images[indices]`` (gathered chunk by chunk).

    Sums are exact integers, accumulated over chunks of ~4M values, so neither
    a float copy of the whole set nor cancellation in var = E[x^2] - E[x]^2.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 N x C x H x W tensor, got {images.dtype} {tuple(images.shape)}")
    total = images.shape[0] if indices is None else len(indices)
    if total == 0:
        raise ValueError("channel_stats needs at least one image")
    channels = images.shape[1]
    per_image = images[0].numel()
    chunk = max(1, _STATS_CHUNK_VALUES // per_image)
    sums = torch.zeros(channels, dtype=torch.int64)
    squares = torch.zeros(channels, dtype=torch.int64)
    for start in range(0, total, chunk):
        part = images[start:start + chunk] if indices is None else images[indices[start:start + chunk]]
        part = part.to(torch.int32)
        sums += part.sum(dim=(0, 2, 3), dtype=torch.int64)
        squares += (part * part).sum(dim=(0, 2, 3), dtype=torch.int64)
    count = total * per_image // channels
    means, stds = [], []
    for s, sq in zip(sums.tolist(), squares.tolist()):
        means.append(s / count / 255)
        stds.append(((count * sq - s * s) / (count * count)) ** 0.5 / 255)
    return tuple(means), tuple(stds)
