"""What the training benchmarks share: their command line's ``--data``
option, the thread setting, and the CIFAR-10 split they train on (45,000
training / 5,000 held-out validation images, seed 0: the split ``search.py
train`` uses)."""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from nas.device import configure_threads
from nas.training.datasets import load_dataset
from nas.training.decode import ImageData
from nas.training.splits import Splits, make_splits


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


def cpu_model() -> str:
    """The processor's model name (figures are only comparable on one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags as /proc/cpuinfo lists them (None if unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_isa() -> str:
    """The widest of the vector units that decide the kernels torch runs
    (two CPUs with one model name, e.g. "AMD EPYC", can differ here)."""
    flags = _cpu_flags()
    if flags is None:
        return "unknown"
    return next((f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags), "below avx2")


def cpu_bf16_flags() -> str:
    """The CPU's bf16 units as /proc/cpuinfo names them, or "no bf16 units"
    (then the trainer runs fp32)."""
    flags = _cpu_flags()
    if flags is None:
        return "bf16 units unknown"
    found = sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
    return ", ".join(found) if found else "no bf16 units"


class ArmLog:
    """Epoch logs of a long side-by-side benchmark, one list per arm, kept in
    a JSON file that is rewritten after every epoch. With the training state
    each arm keeps beside it, a killed run resumes where it was: finished
    arms are not trained again, an unfinished one continues from its last
    epoch boundary, and its wall clock continues from what that boundary
    had cost, so the times are those of an uninterrupted run. ``setup``
    (data, schedule, recipe, machine) names the run: a file written for
    another setup is set aside, never mixed in. ``machine`` (CPU model and
    vector units) is recorded, with each arm's epochs done, whenever a run
    starts or resumes on a machine other than the last one's, so a report
    can say which epochs ran where."""

    def __init__(self, path: str | Path, setup: dict, machine: dict | None = None) -> None:
        self.path, self.setup = Path(path), setup
        self.arms: dict[str, dict] = {}
        self.machines: list[dict] = []
        if not self.path.exists():
            # states without their log (a log deleted to start over) would
            # resume runs whose earlier epochs are not on record
            for state in self.path.parent.glob(f"{self.path.stem}.*.state.pt*"):
                state.unlink()
        else:
            saved = json.loads(self.path.read_text())
            if saved.get("setup") == setup:
                self.arms = saved["arms"]
                self.machines = saved.get("machines", [])
            else:
                aside = self.path.with_name(self.path.name + f".other-{int(time.time())}")
                self.path.rename(aside)
                for state in self.path.parent.glob(f"{self.path.stem}.*.state.pt*"):
                    state.unlink()  # training states of that other setup
                print(f"note: {self.path} was written for another setup; moved to {aside.name}", flush=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if machine is not None and (not self.machines or self.machines[-1]["machine"] != machine):
            self.machines.append({"machine": machine,
                                  "from_epochs": {arm: (v["rows"][-1][0] if v["rows"] else 0.0)
                                                  for arm, v in self.arms.items()}})

    def rows(self, arm: str) -> list[list[float]]:
        """(epochs done, validation accuracy, wall seconds) after each epoch."""
        return self.arms.setdefault(arm, {"rows": [], "finished": False})["rows"]

    def finished(self, arm: str) -> bool:
        return self.arms.get(arm, {}).get("finished", False)

    def state_file(self, arm: str) -> Path:
        return self.path.with_name(f"{self.path.stem}.{arm}.state.pt")

    def append(self, arm: str, epochs: float, accuracy: float, wall: float) -> None:
        self.rows(arm).append([epochs, accuracy, wall])
        self._write()

    def resume_at(self, arm: str, epochs: float) -> float:
        """Drop rows after ``epochs`` (the training state's epoch boundary);
        the wall seconds the run had cost up to there."""
        rows = self.rows(arm)
        rows[:] = [r for r in rows if r[0] <= epochs + 1e-9]
        self._write()
        return rows[-1][2] if rows else 0.0

    def record_paused(self, arm: str, epochs: float, total: float) -> None:
        """Record that, once the epoch ending at ``epochs`` was done, the
        arm's process had spent ``total`` seconds, since the run began, on
        work that is not the arm's own (the other arm's epochs run in its
        callback). The trainer's saved wall time includes those seconds."""
        marks = self.arms.setdefault(arm, {"rows": [], "finished": False}).setdefault("paused", [])
        marks[:] = [m for m in marks if m[0] < epochs - 1e-9] + [[epochs, total]]
        self._write()

    def paused_at(self, arm: str, epochs: float) -> float:
        """The paused total recorded at the last epoch boundary <= ``epochs``."""
        marks = [m for m in self.arms.get(arm, {}).get("paused", []) if m[0] <= epochs + 1e-9]
        return marks[-1][1] if marks else 0.0

    def finish(self, arm: str) -> None:
        self.arms.setdefault(arm, {"rows": [], "finished": False})["finished"] = True
        self._write()
        self.state_file(arm).unlink(missing_ok=True)

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"setup": self.setup, "arms": self.arms, "machines": self.machines}, indent=1))
        os.replace(tmp, self.path)
