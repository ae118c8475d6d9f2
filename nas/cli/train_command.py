"""``search.py train``: the exact model of an architecture YAML, trained at full budget."""
from __future__ import annotations

import argparse

from ._common import progress_printer
from ._options import Command, add_data, add_runtime


def add_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("config", help="architecture YAML (from export, or written by hand)")
    t.add_argument("--epochs", type=float, default=None, help="training epochs (default: 50)")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.4)")
    t.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay on conv and linear weights (default: 5e-4)")
    t.add_argument("--seed", type=int, default=0,
                   help="initial weights and batch order (default: 0); the validation images do not depend on it")
    t.add_argument("--val-size", type=int, default=None,
                   help="validation images: promote's confirmation images, the same whatever --seed; they and as "
                        "many of the search's validation images are held out of training (default: 5000 each; 0: "
                        "none, train on all of them, as He et al. did for their CIFAR-10 test figures)")
    t.add_argument("--subset", type=int, default=None, help="train on a stratified subset of N images")
    t.add_argument("--output", default=None, help="checkpoint path (default: CONFIG with .pt)")
    add_data(t, dataset=True)
    add_runtime(t)


def run(args: argparse.Namespace) -> int:
    from ..workflows.retrain import train_config  # lazy: a command loads its modules when it runs

    result = train_config(
        args.config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        seed=args.seed,
        val_size=args.val_size, subset=args.subset, data=args.data, dataset=args.dataset,
        device=args.device, precision=args.precision, output=args.output,
        progress=progress_printer(), mix_numerics=args.mix_numerics,
    )
    val = "n/a (none held out)" if result["val_accuracy"] is None else f"{result['val_accuracy']:.4f}"
    print(f"validation accuracy {val}, test accuracy {result['test_accuracy']:.4f} "
          f"(with flip test-time augmentation {result['test_accuracy_flip_tta']:.4f}) "
          f"after {result['recipe']['epochs']:g} epochs in {result['train_seconds']:.0f} s "
          f"({result['images_per_second']:.0f} images/s, {result['precision']})")
    print(f"checkpoint: {result['checkpoint']}")
    print(f"results:    {result['results_file']}")
    if result.get("numerics"):
        print(f"numerics:   {result['numerics']['plan_file']} (kernel choices kept for every train of this config "
              f"on this kind of machine)")
    return 0


COMMAND = Command(
    "train", add_arguments=add_arguments, run=run,
    help="train the exact model of an architecture YAML at full budget",
    description="Train the model a YAML describes on the training split; report validation and test accuracy; save "
                "a checkpoint and a results file next to the YAML.")
