"""Image datasets for proxy training (docs/design.md, section 6).

CIFAR-10, CIFAR-100 (through torchvision) or any ImageFolder tree is decoded
once into uint8 tensors (N x 3 x H x W) and cached, so a search never touches
image files again.  ``make_splits`` carves a fixed, stratified validation set
(and optionally a stratified training subset) out of the training split; the
test split is kept apart for retraining a chosen config.

    python -m nas.training.datasets --data data/cifar10       # summary; run twice to see the cache
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import DataError, NasError, one_line
from .decode import (
    CACHE_FORMAT,
    DATA_HINT,
    ImageData,
    decode_imagefolder,
    fingerprint,
    hash_listing,
    read_cache,
    scan_imagefolder,
    write_cache,
)
from .splits import DEFAULT_VAL_SIZE, channel_stats, default_val_size, make_splits

DATASETS = ("cifar10", "cifar100", "imagefolder")


# torchvision's on-disk layout of the python CIFAR archives (folder, files).
# Spelled out here, and checked against torchvision by a test, because
# importing torchvision costs ~2 s on this machine and a cache hit must not
# pay it just to stat six files.
_TORCHVISION_FILES = {
    "cifar10": ("cifar-10-batches-py", (
        "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
        "data_batch_5", "test_batch", "batches.meta",
    )),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}





# --------------------------------------------------------------------------
# loading


def load_dataset(
    name: str = "cifar10",
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ImageData:
    """Load a dataset, decoding it only if its cache is missing or stale.

    ``root``: the dataset folder; default env ``NAS_DATA``, else
    ``data/<name>`` under the current directory.  For cifar10/cifar100 a root
    with ``train/`` and ``test/`` subfolders is read as an ImageFolder tree
    whose class folders must be the dataset's classes; otherwise torchvision
    reads (and, if ``download``, fetches) its python archive there.
    ``cache_dir``: default env ``NAS_CACHE``, else ``~/.cache/nas``.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = _resolve_root(name, root)
    cache_root = _resolve_cache_dir(cache_dir)

    if name == "imagefolder" or _has_split_folders(root):
        tree = scan_imagefolder(name, root)
        return _load_or_build(
            name, str(root), lambda: tree.signature, lambda: decode_imagefolder(tree), cache_root
        )
    folder, _ = _TORCHVISION_FILES[name]
    return _load_or_build(
        name,
        str(root / folder),
        lambda: _torchvision_signature(name, root),
        lambda: _load_torchvision(name, root, download),
        cache_root,
    )


def _resolve_root(name: str, root: str | os.PathLike | None) -> Path:
    if root is None:
        root = os.environ.get("NAS_DATA") or Path("data") / name
    # Absolute, so messages and cache keys do not depend on the cwd.
    return Path(root).expanduser().absolute()


def _resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        cache_dir = os.environ.get("NAS_CACHE") or Path.home() / ".cache" / "nas"
    return Path(cache_dir).expanduser().absolute()


def _has_split_folders(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def _load_or_build(
    name: str,
    source: str,
    signature: Callable[[], str | None],
    build: Callable[[], dict],
    cache_root: Path,
) -> ImageData:
    """The cached content of `source` if its signature still matches, else
    build() it and cache it.  signature() is None while torchvision's files
    are missing (they exist after build() downloaded them)."""
    path = cache_root / f"{name}-{hashlib.sha256(source.encode()).hexdigest()[:16]}.pt"
    sig = signature()  # before decoding: a file changed meanwhile makes the cache stale, never wrong
    if sig is not None:
        hit = read_cache(path, name, source, sig)
        if hit is not None:
            return hit
    content = build()
    if sig is None:  # torchvision has just downloaded the files
        sig = signature()
    content["fingerprint"] = fingerprint(content)
    if sig is not None:
        write_cache(path, {"format": CACHE_FORMAT, "name": name, "source": source, "signature": sig, **content})
    return ImageData(name=name, source=source, cache_file=str(path), cached=False, **content)


# --------------------------------------------------------------------------
# torchvision CIFAR archives


def _torchvision_signature(name: str, root: Path) -> str | None:
    """Signature of the archive's files, or None if one is missing."""
    folder, files = _TORCHVISION_FILES[name]
    rows = []
    for filename in files:
        try:
            st = os.stat(root / folder / filename)
        except FileNotFoundError:
            return None
        rows.append((f"{folder}/{filename}", st.st_size, st.st_mtime_ns))
    listing = hashlib.sha256()
    hash_listing(listing, rows)
    return listing.hexdigest()


def _load_torchvision(name: str, root: Path, download: bool) -> dict:
    from torchvision import (
        datasets,  # lazy: torchvision costs ~2 s at import; a cache hit never needs it
    )

    dataset_cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    try:
        # torchvision verifies every file's md5, so a damaged archive ends up here too.
        train = dataset_cls(str(root), train=True, download=download)
        test = dataset_cls(str(root), train=False, download=False)  # the first call fetched both splits
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, tarfile.TarError) as exc:
        folder, _ = _TORCHVISION_FILES[name]
        fetch = "could not be downloaded" if download else "download is off"
        raise DataError(
            f"{name}: no usable data in {root}: no train/ and test/ ImageFolder subfolders, "
            f"and torchvision's {folder}/ is missing or damaged and {fetch} "
            f"({type(exc).__name__}: {one_line(exc)}); {DATA_HINT}"
        ) from exc
    # .data is an N x H x W x 3 view of an N x 3 x H x W array: the permute
    # gives the contiguous layout back without a copy.
    return {
        "classes": list(train.classes),
        "train_images": torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous(),
        "train_labels": torch.tensor(train.targets, dtype=torch.int64),
        "test_images": torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous(),
        "test_labels": torch.tensor(test.targets, dtype=torch.int64),
    }




# --------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nas.training.datasets",
        description="Load (decode once, then cache) a dataset and print its splits and statistics.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="cifar10")
    parser.add_argument("--data", metavar="DIR", help="dataset folder (default: $NAS_DATA, else data/<dataset>)")
    parser.add_argument("--val-size", type=int, metavar="N",
                        help=f"validation images (default: {DEFAULT_VAL_SIZE}, at most a tenth of the train set)")
    parser.add_argument("--subset", type=int, metavar="N", help="train on a stratified subset of N images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="decoded-tensor cache (default: $NAS_CACHE, else ~/.cache/nas)")
    args = parser.parse_args(argv)

    try:
        start = time.perf_counter()
        data = load_dataset(args.dataset, args.data, args.cache_dir)
        load_seconds = time.perf_counter() - start
        val_size = args.val_size if args.val_size is not None else default_val_size(len(data.train_labels))
        splits = make_splits(data.train_labels, val_size, seed=args.seed, subset=args.subset)
    except NasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    mean, std = channel_stats(data.train_images, splits.train)
    train_counts = torch.bincount(data.train_labels[splits.train], minlength=data.num_classes).tolist()
    val_counts = torch.bincount(data.train_labels[splits.val], minlength=data.num_classes).tolist()
    test_counts = torch.bincount(data.test_labels, minlength=data.num_classes).tolist()
    h, w = data.image_size
    print(f"source:      {data.source}")
    more = ", ..." if data.num_classes > 10 else ""
    print(f"classes:     {data.num_classes} ({', '.join(data.classes[:10])}{more})")
    print(f"image size:  3 x {h} x {w} (uint8)")
    subset_note = f", subset {args.subset}" if args.subset is not None else ""
    print(f"splits:      train {len(splits.train)} / val {len(splits.val)} / test {len(data.test_labels)}"
          f"  (seed {args.seed}{subset_note})")
    width = max(len(c) for c in data.classes)
    print(f"  {'class':<{width}}  {'train':>7} {'val':>7} {'test':>7}")
    for cls, a, b, c in zip(data.classes, train_counts, val_counts, test_counts):
        print(f"  {cls:<{width}}  {a:>7} {b:>7} {c:>7}")
    print(f"train mean:  {' '.join(f'{m:.4f}' for m in mean)}")
    print(f"train std:   {' '.join(f'{s:.4f}' for s in std)}")
    print(f"fingerprint: {data.fingerprint}")
    how = "cache hit" if data.cached else "decoded, cache miss"
    print(f"load time:   {load_seconds:.2f} s ({how}: {data.cache_file})")
    return 0


if __name__ == "__main__":
    # Run nas.training.datasets' own main, not this __main__ copy of the module, so that
    # functions sent to decode workers and the classes returned are this module's.
    from nas.training.datasets import main as _main

    sys.exit(_main())
