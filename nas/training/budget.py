"""The training budget every workflow trains on (docs/design.md section 6):
:class:`Fidelity` — dataset, subset, validation size and split, rungs,
batch size, learning rate, seeds — and its keys, which decide whether two
stored evaluations were trained alike."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import yaml

from .. import attention as _attention
from .train import Recipe


@dataclass
class Fidelity:
    """The proxy-training budget of every trial."""

    dataset: str = "cifar10"
    subset: int | None = 10000
    val_size: int | None = None  # None: the dataset's default (5,000 for CIFAR-10)
    rungs: list[float] = field(default_factory=lambda: [1.0, 3.0])  # epochs; the last is the budget
    eta: int = 3
    # Proxy recipe, measured on this machine (resnet20, 10k subset, rungs 1
    # and 3 epochs, seed 0): batch 256 / lr 0.4 / 1-epoch warm-up left the
    # first rung inside the warm-up (18-20 % there) and let SK with
    # depthwise branches diverge; batch 128 / lr 0.2 / 0.25-epoch warm-up /
    # clip 5 gave 26-37 % at rung 1 and 51-55 % at rung 3 in the same time,
    # and no divergence.
    batch_size: int = 128
    lr: float = 0.2
    #: epochs of linear warm-up; short, so that the first rung is measured
    #: after the peak learning rate rather than in the middle of the ramp
    warmup: float = 0.25
    #: global gradient-norm clip (None: off)
    grad_clip: float | None = 5.0
    seed: int = 0
    #: seeds a front candidate is trained with (docs/design.md 6a): a trial whose
    #: last rung lands on, or within noise of, the current front is trained
    #: again with seeds seed+1 .. seed+repeats-1 and reports the mean. 1: off.
    repeats: int = 1
    #: which held-out images measure accuracy: "search" (the search's and
    #: calibrate's validation split) or "confirmation" (a disjoint split that
    #: promote, ablate and train validate on, so that a design is confirmed on
    #: images that played no part in choosing it); both are held out of
    #: training either way (docs/design.md 6a)
    validation: str = "search"

    @property
    def epochs(self) -> float:
        return self.rungs[-1]

    def key(self) -> str:
        """Identifies the budget: results at equal keys are comparable (the
        modules' compute revision is part of it: results of modules that
        computed something else are not)."""
        blob = yaml.safe_dump(
            {"dataset": self.dataset, "subset": self.subset, "val_size": self.val_size, "rungs": self.rungs,
             "batch_size": self.batch_size, "lr": self.lr, "warmup": self.warmup, "grad_clip": self.grad_clip,
             "seed": self.seed, "modules": _attention.COMPUTE_REVISION, **self._split_key()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def budget_key(self) -> str:
        """Like :meth:`key` but without the seed: one budget, any seed (the
        evaluations of :mod:`nas.training.evaluate` store the seed beside it)."""
        blob = yaml.safe_dump(
            {"dataset": self.dataset, "subset": self.subset, "val_size": self.val_size, "rungs": self.rungs,
             "batch_size": self.batch_size, "lr": self.lr, "warmup": self.warmup, "grad_clip": self.grad_clip,
             "modules": _attention.COMPUTE_REVISION, **self._split_key()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def _split_key(self) -> dict[str, str]:
        # the confirmation split is held out of training since the verdicts
        # issue: results before it trained on other images and are not comparable
        return {"splits": "val+confirm", "validation": self.validation}

    def recipe(self, seed: int | None = None):
        """The trainer's recipe for this budget (rungs before the last are
        where validation is measured on the way)."""

        return Recipe(rungs=self.rungs[:-1], epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                      warmup_epochs=self.warmup, grad_clip=self.grad_clip,
                      seed=self.seed if seed is None else seed)

    def seeds(self) -> list[int]:
        """The seeds of a repeated front candidate, the trial's own first."""
        return [self.seed + i for i in range(self.repeats)]

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "subset": self.subset, "val_size": self.val_size,
                "rungs": list(self.rungs), "eta": self.eta, "batch_size": self.batch_size, "lr": self.lr,
                "warmup": self.warmup, "grad_clip": self.grad_clip, "seed": self.seed, "repeats": self.repeats,
                "validation": self.validation}
