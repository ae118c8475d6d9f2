"""Wall time for resnet20 to first reach given CIFAR-10 validation
accuracies (default 85 % and 91 %): this project's trainer against the naive
recipe, with the same schedule, one run, side by side.

Both train resnet20 (no attention) on the same 45,000 training images and
measure the same 5,000 held-out validation images after every epoch, with
the same recipe, the trainer's default (``nas.training.train.Recipe``: batch 256, SGD
with Nesterov momentum 0.9, one epoch of linear warm-up then linear decay to
zero over ``--epochs``, label smoothing 0.1, weight decay on conv and linear
weights). They differ only in how the work is done:

(a) ``nas.training.train.train``: tensors in memory, batched crop and flip,
    channels_last, bf16 autocast where the CPU has it;
(b) fp32, NCHW, torchvision ``DataLoader`` (``num_workers=2``) over PIL
    images with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``,
    ``ToTensor``, ``Normalize``; evaluation through a ``DataLoader`` too.

The arms alternate in one process, epoch by epoch ((a) one epoch, (b) one
epoch, ...), and each clock counts only its own arm's epochs, evaluation
included: a slow spell of the machine (a shared CPU's speed drifts by tens
of per cent over hours) falls on both. An arm stops at the first epoch whose
validation accuracy reaches the highest target; the other goes on alone. Long schedules take hours
on a small CPU, so the run keeps its epoch log (``--log``, JSON) and each
arm's training state beside it: the same command after a kill resumes where
it stopped, and the times are those of an uninterrupted run.

``--precision fp32`` makes (a) train in fp32 where the CPU has bf16 (to
compare the data pipelines alone, or to go on with a run begun on a CPU
without bf16; the log records which machine ran which epochs).

    python benchmarks/time_to_accuracy.py [--data DIR] [--epochs 50] [--targets 0.85 0.91] [--log FILE]
        [--precision auto|fp32|bf16]
"""
from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import _cifar
import torch
from torch import nn
from train_speed import _PILImages  # same naive dataset as the throughput benchmark

import nas
from nas.device import resolve_runtime
from nas.training.splits import channel_stats
from nas.training.train import Recipe, _lr_at, _param_groups, saved_progress, train


def run_ours(images, labels, val_images, val_labels, mean, std, epochs: float, target: float,
             log: _cifar.ArmLog, arm: str = "ours", between: Callable[[], None] | None = None,
             runtime=None) -> list[tuple]:
    """Train (a) until ``target`` or the end; returns (epochs, accuracy,
    wall seconds) after every epoch, kept in ``log`` (resumable, see ArmLog).
    ``between()`` runs after each of (a)'s epochs, off (a)'s clock: the other
    arm's next epoch, so that both arms see the same machine."""
    recipe = Recipe(epochs=epochs, rungs=list(range(1, math.ceil(epochs))), seed=0)
    runtime = runtime or resolve_runtime()
    rows = log.rows(arm)
    if log.finished(arm):
        return [tuple(r) for r in rows]
    state = log.state_file(arm)
    key = f"time_to_accuracy|{arm}|{log.setup}"
    progress = saved_progress(state, key)
    # the trainer's saved wall time includes the other arm's epochs run in
    # between; the log knows how many seconds of those came before the state
    resumed_at = progress["step"] * recipe.batch_size / len(labels) if progress else 0.0
    paused_before = log.paused_at(arm, resumed_at) if progress else 0.0
    log.resume_at(arm, resumed_at)
    offset = progress["wall_seconds"] - paused_before if progress else 0.0
    torch.manual_seed(0)
    model = nas.build_model(nas.preset_config("resnet20"))
    start = time.perf_counter()
    paused = 0.0

    def at_epoch(rung: int, epochs_done: float, accuracy: float) -> bool:
        nonlocal paused
        wall = offset + time.perf_counter() - start - paused
        log.append(arm, epochs_done, accuracy, wall)
        print(f"  (a) epoch {epochs_done:5.2f}  val {accuracy:.4f}  wall {wall:6.0f} s", flush=True)
        if accuracy >= target:
            return True
        if between is not None:
            t0 = time.perf_counter()
            between()
            paused += time.perf_counter() - t0
            log.record_paused(arm, epochs_done, paused_before + paused)
        return False

    train(model, images, labels, val_images, val_labels, mean, std, recipe, runtime, callback=at_epoch,
          state_path=state, state_key=key, state_interval=0)
    log.finish(arm)
    return [tuple(r) for r in rows]


class NaiveArm:
    """(b), the naive recipe, one epoch per call of :meth:`epoch`, so that
    it can alternate with (a); resumable like (a) from its state file."""

    def __init__(self, images, labels, val_images, val_labels, mean, std, epochs: float, target: float,
                 log: _cifar.ArmLog, arm: str = "naive") -> None:
        from torchvision import transforms

        self.log, self.arm, self.target = log, arm, target
        self.n_val = len(val_labels)
        self.done = log.finished(arm)
        if self.done:
            return
        recipe = Recipe(epochs=epochs, seed=0)
        augment = transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ])
        plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
        self.loader = torch.utils.data.DataLoader(_PILImages(images, labels, augment), batch_size=recipe.batch_size,
                                                  shuffle=True, num_workers=2, drop_last=True)
        self.val_loader = torch.utils.data.DataLoader(_PILImages(val_images, val_labels, plain), batch_size=1000,
                                                      num_workers=2)
        torch.manual_seed(0)
        self.model = nas.build_model(nas.preset_config("resnet20"))
        self.opt = torch.optim.SGD(_param_groups(self.model, recipe.weight_decay), lr=recipe.lr,
                                   momentum=recipe.momentum, nesterov=True)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.lr = recipe.lr
        self.steps_per_epoch = len(self.loader)
        self.total = math.ceil(epochs * self.steps_per_epoch)
        self.warmup = round(recipe.warmup_epochs * self.steps_per_epoch)
        self.step = 0
        # this arm's own generator drives the loader's shuffling and its
        # workers' seeds, untouched by (a) in between; restored from the
        # state, the next epochs are the ones an unbroken run trains
        self.generator = torch.Generator().manual_seed(0)
        self.loader.generator = self.generator
        state_file = log.state_file(arm)
        if state_file.exists():
            state = torch.load(state_file, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.generator.set_state(state["rng"])
            self.step = state["step"]
            print(f"  (b) resuming at epoch {self.step / self.steps_per_epoch:.2f}", flush=True)
        self.wall = log.resume_at(arm, self.step / self.steps_per_epoch)

    def epoch(self) -> None:
        """One epoch of training, then validation; the clock counts both."""
        if self.done:
            return
        start = time.perf_counter()
        self.model.train()
        for x, y in self.loader:
            for group in self.opt.param_groups:
                group["lr"] = _lr_at(self.step, self.total, self.warmup, self.lr)
            loss = self.criterion(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            if self.step >= self.total:
                break
        self.model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in self.val_loader:
                correct += (self.model(x).argmax(1) == y).sum().item()
        accuracy = correct / self.n_val
        self.done = accuracy >= self.target or self.step >= self.total
        if not self.done:
            state_file = self.log.state_file(self.arm)
            tmp = state_file.with_name(state_file.name + ".tmp")
            torch.save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                        "rng": self.generator.get_state(), "step": self.step,
                        "wall_seconds": self.wall + time.perf_counter() - start}, tmp)
            tmp.replace(state_file)
        self.wall += time.perf_counter() - start
        epochs_done = self.step / self.steps_per_epoch
        print(f"  (b) epoch {epochs_done:5.2f}  val {accuracy:.4f}  wall {self.wall:6.0f} s", flush=True)
        self.log.append(self.arm, epochs_done, accuracy, self.wall)
        if self.done:
            self.log.finish(self.arm)


def _first(rows, target: float):
    return next((row for row in rows if row[1] >= target), None)


def main() -> None:
    parser = _cifar.parser(__doc__)
    parser.add_argument("--epochs", type=float, default=Recipe().epochs,
                        help="length of the shared schedule (default: the trainer's default budget)")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.85, 0.91])
    parser.add_argument("--log", default=None,
                        help="epoch log kept for resuming (default: studies/benchmarks/time_to_accuracy-<epochs>.json)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="(a)'s precision (default: the trainer's automatic choice; (b) is always fp32)")
    parser.add_argument("--subset", type=int, default=None, help=argparse.SUPPRESS)  # a quick check of the script
    args = parser.parse_args()

    data, splits, threads = _cifar.heldout_split(args.data)
    train_idx = splits.train if args.subset is None else splits.train[:args.subset]
    images, labels = data.train_images[train_idx], data.train_labels[train_idx]
    val_images, val_labels = data.train_images[splits.val], data.train_labels[splits.val]
    mean, std = channel_stats(images)
    runtime = resolve_runtime(precision=args.precision)
    precision = runtime.precision
    targets = sorted(args.targets)
    setup = {"epochs": args.epochs, "targets": targets, "data": data.fingerprint, "train": len(labels),
             "cpu": _cifar.cpu_model(), "threads": threads, "precision": precision,
             "torch": str(torch.__version__), "recipe": repr(Recipe(epochs=args.epochs, seed=0))}
    machine = {"cpu": _cifar.cpu_model(), "isa": _cifar.cpu_isa()}
    log = _cifar.ArmLog(args.log or f"studies/benchmarks/time_to_accuracy-{args.epochs:g}.json", setup, machine)
    print(f"# resnet20, {len(labels)} train / {len(val_labels)} val images, schedule {args.epochs:g} epochs, "
          f"targets {', '.join(f'{t:.0%}' for t in targets)}; {_cifar.cpu_model()}, torch {torch.__version__}, "
          f"{threads} threads, (a) in {precision}, (b) in fp32; log {log.path}", flush=True)
    # the arms alternate epoch by epoch: (a) one epoch, (b) one epoch, ...;
    # each clock counts only its own arm's epochs, and a slow spell of the
    # machine falls on both
    naive = NaiveArm(images, labels, val_images, val_labels, mean, std, args.epochs, targets[-1], log)

    def naive_catches_up() -> None:
        # (b) trains an epoch only while it has done fewer than (a): after a
        # resume that left (b) ahead, (a) catches up alone, and the pairs line up again
        if len(log.rows("naive")) < len(log.rows("ours")):
            naive.epoch()

    ours = run_ours(images, labels, val_images, val_labels, mean, std, args.epochs, targets[-1], log,
                    between=naive_catches_up, runtime=runtime)
    while not naive.done:  # (a) is finished: (b) goes on alone
        naive.epoch()
    if len(log.machines) > 1:
        print("machines (each from the epochs each arm had done when it took over):")
        for entry in log.machines:
            done = ", ".join(f"{arm} {n:g}" for arm, n in entry["from_epochs"].items())
            print(f"  {entry['machine']['cpu']} ({entry['machine']['isa']}) from {done or 'the start'}")
    logs = {"(a) nas.training.train": ours, "(b) naive": [tuple(r) for r in log.rows("naive")]}
    for target in targets:
        times = {}
        for name, rows in logs.items():
            hit = _first(rows, target)
            if hit is None:
                print(f"{name:<14} did not reach {target:.0%} in {args.epochs:g} epochs "
                      f"(best {max(a for _, a, _ in rows):.4f}, {rows[-1][2]:.0f} s)")
            else:
                times[name] = hit[2]
                print(f"{name:<14} reached {target:.0%} ({hit[1]:.4f}) at epoch {hit[0]:.2f} after {hit[2]:.0f} s "
                      f"({hit[2] / 60:.1f} min)")
        if len(times) == 2:
            print(f"time ratio to {target:.0%}, (b)/(a): {times['(b) naive'] / times['(a) nas.training.train']:.2f}x")
    ours, naive = logs["(a) nas.training.train"][-1], logs["(b) naive"][-1]
    if abs(ours[0] - naive[0]) < 0.05:  # both ran the same number of epochs
        print(f"wall time for the same {ours[0]:.0f} epochs, (b)/(a): {naive[2] / ours[2]:.2f}x")


if __name__ == "__main__":
    main()
