"""What the lossy JPEG copy of CIFAR-10 costs resnet20: the original pixels
against the JPEG copy, the same schedule, one run, side by side.

Arms, each trained and validated on its own copy of the same images (same
45,000 / 5,000 split, seed 0), with the schedule of ``time_to_accuracy.py``
(its ``run_ours``: the default recipe, validation after every epoch):

* ``original``: the lossless copy (``--data``, default data/cifar10);
* ``jpeg``: ``../shared/data/cifar10-jpeg.tar.gz`` (quality 75, 4:2:0),
  unpacked at ``--jpeg`` (default data/cifar10-jpeg);
* with ``--quality Q``, also ``requality-Q``: the original pixels encoded
  once with Pillow at quality Q.

Arms keep their epoch log and training state (``--log``), so a killed run
resumes where it stopped.

    python benchmarks/jpeg_quality.py [--data DIR] [--jpeg DIR] [--epochs 12] [--quality Q] [--log FILE]
"""
from __future__ import annotations

import argparse
import io
import time

import _cifar
import numpy as np
import torch
from PIL import Image
from time_to_accuracy import run_ours

from nas.device import resolve_runtime
from nas.training.datasets import load_dataset
from nas.training.splits import channel_stats
from nas.training.train import Recipe


def reencode(images: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 N x C x H x W through a JPEG round trip at ``quality``."""
    pixels = images.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty_like(pixels)
    for i, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        out[i] = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def main() -> None:
    parser = _cifar.parser(__doc__)
    parser.add_argument("--jpeg", default="data/cifar10-jpeg", help="the JPEG copy, unpacked (ImageFolder)")
    parser.add_argument("--quality", type=int, default=0, help="also train on the originals re-encoded at this "
                        "JPEG quality (1-95; default 0: no such arm)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--log", default=None,
                        help="epoch log kept for resuming (default: studies/benchmarks/jpeg_quality-<epochs>.json)")
    parser.add_argument("--subset", type=int, default=None, help=argparse.SUPPRESS)  # a quick check of the script
    args = parser.parse_args()
    if not 0 <= args.quality <= 95:
        parser.error(f"--quality: must be 0 (no re-encoded arm) or 1-95, got {args.quality}")

    original, splits, threads = _cifar.heldout_split(args.data)
    jpeg = load_dataset("cifar10", args.jpeg)
    if jpeg.classes != original.classes or not torch.equal(jpeg.train_labels, original.train_labels):
        raise SystemExit(f"error: the labels of {jpeg.source} and {original.source} differ: not two copies "
                         "of one split")
    arms = {"original": original.train_images, "jpeg": jpeg.train_images}
    if args.quality:
        start = time.perf_counter()
        arms[f"requality-{args.quality}"] = reencode(original.train_images, args.quality)
        print(f"re-encoded {len(original.train_images)} images at quality {args.quality} in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    precision = resolve_runtime().precision
    train_idx = splits.train if args.subset is None else splits.train[:args.subset]
    setup = {"epochs": args.epochs, "arms": list(arms), "train": len(train_idx), "original": original.fingerprint,
             "jpeg": jpeg.fingerprint,
             "cpu": _cifar.cpu_model(), "threads": threads, "precision": precision,
             "torch": str(torch.__version__), "recipe": repr(Recipe(epochs=args.epochs, seed=0))}
    log = _cifar.ArmLog(args.log or f"studies/benchmarks/jpeg_quality-{args.epochs}.json", setup)
    print(f"# resnet20, {args.epochs} epochs, {len(train_idx)} train / {splits.val.numel()} val images; "
          f"{_cifar.cpu_model()}, torch {torch.__version__}, {threads} threads, {precision}; log {log.path}",
          flush=True)
    labels = original.train_labels
    results = {}
    for arm, images in arms.items():
        change = (images.float() - original.train_images.float()).abs().mean().item()
        print(f"{arm}: mean change {change:.2f}/255 per pixel value against the original", flush=True)
        train_images, val_images = images[train_idx], images[splits.val]
        mean, std = channel_stats(train_images)
        # a target above 100 % never stops the run early: every epoch is trained
        rows = run_ours(train_images, labels[train_idx], val_images, labels[splits.val], mean, std,
                        args.epochs, target=2.0, log=log, arm=arm)
        results[arm] = (rows[-1], change)
    for arm, ((epochs_done, accuracy, wall), change) in results.items():
        delta = accuracy - results["original"][0][1]
        print(f"{arm:<14} validation {accuracy:.4f} ({delta:+.4f} vs original) after {epochs_done:.0f} epochs, "
              f"{wall:.0f} s; mean change {change:.2f}/255")


if __name__ == "__main__":
    main()
