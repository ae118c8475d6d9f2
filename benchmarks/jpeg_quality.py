"""How much JPEG compression of the training and validation images costs
resnet20, measured on the offline copy.

The offline CIFAR-10 copy is already JPEG (quality 75, chroma subsampled), so
the loss against the original files cannot be measured here. What can be
measured is the cost of one more step: decode the copy, re-encode every image
with Pillow at ``--quality`` (train and validation alike, as a compressed
dataset would be), and train resnet20 with the schedule of
``time_to_accuracy.py`` (its ``run_ours``: the default recipe, seed 0,
validation after every epoch). ``--quality 0`` trains on the copy as shipped,
for the comparison.

    python benchmarks/jpeg_quality.py [--data DIR] [--quality 50] [--epochs 12]
"""
from __future__ import annotations

import io
import time

import _cifar
import numpy as np
import torch
from PIL import Image
from time_to_accuracy import run_ours

from nas.data import channel_stats
from nas.device import resolve_runtime


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
    parser.add_argument("--quality", type=int, default=50, help="JPEG quality 1-95; 0: the copy as shipped")
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    if not 0 <= args.quality <= 95:
        parser.error(f"--quality: must be 0 (as shipped) or 1-95, got {args.quality}")

    data, splits, _ = _cifar.heldout_split(args.data)
    images = data.train_images
    if args.quality:
        start = time.perf_counter()
        images = reencode(images, args.quality)
        change = (images.float() - data.train_images.float()).abs().mean().item()
        print(f"re-encoded {len(images)} images at quality {args.quality} in {time.perf_counter() - start:.0f} s; "
              f"mean change {change:.2f}/255 per pixel value", flush=True)
    train_images, val_images = images[splits.train], images[splits.val]
    mean, std = channel_stats(train_images)
    # time_to_accuracy's own run, so the two benchmarks share one schedule; a
    # target above 100 % never stops it early, so every epoch is trained
    log = run_ours(train_images, data.train_labels[splits.train], val_images, data.train_labels[splits.val],
                   mean, std, args.epochs, target=2.0)
    epochs_done, accuracy, wall = log[-1]
    label = f"re-encoded at quality {args.quality}" if args.quality else "as shipped"
    print(f"resnet20, {epochs_done:.0f} epochs, images {label}: validation {accuracy:.4f} "
          f"({wall:.0f} s wall, {resolve_runtime().precision})")

if __name__ == "__main__":
    main()
