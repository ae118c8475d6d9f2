"""What the training benchmarks share: their command line's ``--data``
option, the thread setting, and the CIFAR-10 split they train on (45,000
training / 5,000 held-out validation images, seed 0: the split ``search.py
train`` uses)."""
from __future__ import annotations

import argparse

from nas.data import ImageData, Splits, load_dataset, make_splits
from nas.device import configure_threads


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by ``doc``'s first line, with ``--data``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--data", help="CIFAR-10 folder (default: $NAS_DATA, else data/cifar10)")
    return p


def heldout_split(data_dir: str | None) -> tuple[ImageData, Splits, int]:
    """Threads set for this process, CIFAR-10 loaded, the 5,000-image
    validation split drawn; returns (data, splits, threads)."""
    threads = configure_threads()
    data = load_dataset("cifar10", data_dir)
    return data, make_splits(data.train_labels, 5000, seed=0), threads
