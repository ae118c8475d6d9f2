"""Wall time for resnet20 to first reach a CIFAR-10 validation accuracy
(default 85 %): this project's trainer against the naive recipe, with the
same schedule, one run, side by side.

Both train resnet20 (no attention) on the same 45,000 training images and
measure the same 5,000 held-out validation images after every epoch, with
the same recipe: batch 256, SGD with Nesterov momentum 0.9, peak learning
rate 0.4 with one epoch of linear warm-up then linear decay to zero over
``--epochs``, label smoothing 0.1, weight decay 5e-4 on conv and linear
weights. They differ only in how the work is done:

(a) ``nas.train.train``: tensors in memory, batched crop and flip,
    channels_last, bf16 autocast where the CPU has it;
(b) fp32, NCHW, torchvision ``DataLoader`` (``num_workers=2``) over PIL
    images with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``,
    ``ToTensor``, ``Normalize``; evaluation through a ``DataLoader`` too.

The clock includes evaluation and stops at the first epoch whose validation
accuracy reaches the target.

    python benchmarks/time_to_accuracy.py [--data DIR] [--epochs 15] [--target 0.85]
"""
from __future__ import annotations

import math
import time

import _cifar
import torch
from torch import nn
from train_speed import _PILImages  # same naive dataset as the throughput benchmark

import nas
from nas.data import channel_stats
from nas.device import resolve_runtime
from nas.train import Recipe, _lr_at, _param_groups, train


def run_ours(images, labels, val_images, val_labels, mean, std, epochs: float, target: float) -> list[tuple]:
    torch.manual_seed(0)
    model = nas.build_model(nas.preset_config("resnet20"))
    log: list[tuple] = []
    start = time.perf_counter()

    def at_epoch(rung: int, epochs_done: float, accuracy: float) -> bool:
        log.append((epochs_done, accuracy, time.perf_counter() - start))
        print(f"  (a) epoch {epochs_done:5.2f}  val {accuracy:.4f}  wall {log[-1][2]:6.0f} s", flush=True)
        return accuracy >= target

    recipe = Recipe(epochs=epochs, rungs=list(range(1, math.ceil(epochs))), seed=0)
    train(model, images, labels, val_images, val_labels, mean, std, recipe, resolve_runtime(), callback=at_epoch)
    return log


def run_naive(images, labels, val_images, val_labels, mean, std, epochs: float, target: float) -> list[tuple]:
    from torchvision import transforms

    recipe = Recipe(epochs=epochs, seed=0)
    augment = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(_PILImages(images, labels, augment), batch_size=recipe.batch_size,
                                         shuffle=True, num_workers=2, drop_last=True)
    val_loader = torch.utils.data.DataLoader(_PILImages(val_images, val_labels, plain), batch_size=1000,
                                             num_workers=2)
    torch.manual_seed(0)
    model = nas.build_model(nas.preset_config("resnet20"))
    opt = torch.optim.SGD(_param_groups(model, recipe.weight_decay), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    steps_per_epoch = len(loader)
    total = math.ceil(epochs * steps_per_epoch)
    warmup = round(recipe.warmup_epochs * steps_per_epoch)
    log: list[tuple] = []
    start = time.perf_counter()
    step = 0
    while step < total:
        model.train()
        for x, y in loader:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, warmup, recipe.lr)
            loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= total:
                break
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x).argmax(1) == y).sum().item()
        accuracy = correct / len(val_labels)
        log.append((step / steps_per_epoch, accuracy, time.perf_counter() - start))
        print(f"  (b) epoch {log[-1][0]:5.2f}  val {accuracy:.4f}  wall {log[-1][2]:6.0f} s", flush=True)
        if accuracy >= target:
            break
    return log


def _first(log: list[tuple], target: float):
    return next((row for row in log if row[1] >= target), None)


def main() -> None:
    parser = _cifar.parser(__doc__)
    parser.add_argument("--epochs", type=float, default=15, help="length of the shared schedule")
    parser.add_argument("--target", type=float, default=0.85)
    args = parser.parse_args()

    data, splits, threads = _cifar.heldout_split(args.data)
    images, labels = data.train_images[splits.train], data.train_labels[splits.train]
    val_images, val_labels = data.train_images[splits.val], data.train_labels[splits.val]
    mean, std = channel_stats(images)
    print(f"# resnet20, {len(labels)} train / {len(val_labels)} val images, schedule {args.epochs:g} epochs, "
          f"target {args.target:.0%}; torch {torch.__version__}, {threads} threads, "
          f"(a) in {resolve_runtime().precision}")
    logs = {
        "(a) nas.train": run_ours(images, labels, val_images, val_labels, mean, std, args.epochs, args.target),
        "(b) naive": run_naive(images, labels, val_images, val_labels, mean, std, args.epochs, args.target),
    }
    times = {}
    for name, log in logs.items():
        hit = _first(log, args.target)
        if hit is None:
            print(f"{name:<14} did not reach {args.target:.0%} in {args.epochs:g} epochs "
                  f"(best {max(a for _, a, _ in log):.4f}, {log[-1][2]:.0f} s)")
        else:
            times[name] = hit[2]
            print(f"{name:<14} reached {hit[1]:.4f} at epoch {hit[0]:.2f} after {hit[2]:.0f} s "
                  f"({hit[2] / 60:.1f} min)")
    if len(times) == 2:
        print(f"time ratio (b)/(a): {times['(b) naive'] / times['(a) nas.train']:.2f}x")
    ours, naive = logs["(a) nas.train"][-1], logs["(b) naive"][-1]
    if ours[0] == naive[0]:  # both ran the same number of epochs
        print(f"wall time for the same {ours[0]:g} epochs, (b)/(a): {naive[2] / ours[2]:.2f}x")


if __name__ == "__main__":
    main()
