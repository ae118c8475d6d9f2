"""A live status line for the trial being trained, on a terminal only.

A trial on a 2-core CPU trains for minutes; without this, `search.py` is
silent from its first line to the end of the first trial. The line (tqdm,
cleared when the trial ends, so the one line per finished trial stays as it
was) shows the trial number, the rung it is training towards, the epochs
done of the budget, images per second and the trial's own ETA. Seed
repeats of a front candidate restart it with their seed shown. Output that
is not a terminal (a file, a pipe, a worker of a parallel run) gets nothing.
"""
from __future__ import annotations

import shutil
import sys
from typing import IO

from tqdm import tqdm


class TrialProgress:
    """The trainer's ``progress(step, total_steps, loss)`` hook for one trial."""

    def __init__(self, trial_number: int, rungs: list[float], batch_size: int, file: IO[str] | None = None) -> None:
        self.trial_number = trial_number
        self.rungs = list(rungs)
        self.batch_size = batch_size
        self.file = file or sys.stdout
        self.bar: tqdm | None = None
        self.last_step = 0
        self.trainings = 0
        self.seed: int | None = None  # set by start() for the trainings after the first

    def _label(self, step: int, total: int) -> str:
        epochs = step / total * self.rungs[-1]
        rung = next((i for i, r in enumerate(self.rungs) if epochs <= r + 1e-9), len(self.rungs) - 1)
        seed = f" seed {self.seed}" if self.trainings > 1 and self.seed is not None else ""
        return (f"trial {self.trial_number}{seed} rung {rung + 1}/{len(self.rungs)} "
                f"epoch {epochs:.2f}/{self.rungs[-1]:g}")

    def __call__(self, step: int, total: int, loss: float) -> None:
        if self.bar is None or step < self.last_step:  # a new training: the first, or a seed repeat
            self.close()
            self.trainings += 1
            label = self._label(step, total)
            # the size at each training's start; a terminal that reports 0 x 0 (a bare
            # pseudo-terminal) gets 100 x 24, else tqdm would hide the line as off-screen
            size = shutil.get_terminal_size((100, 24))
            # starts at the steps already done, so the rate is measured from here, not
            # from images trained before the line existed
            self.bar = tqdm(total=total * self.batch_size, initial=step * self.batch_size, desc=label, unit="img",
                            file=self.file, leave=False, ncols=size.columns, nrows=size.lines, mininterval=0.5,
                            bar_format="{desc} |{bar}| {rate_fmt} ETA {remaining}")
            self.last_step = step
            return
        label = self._label(step, total)
        rung_changed = self.bar.desc.split(" epoch ")[0] != label.split(" epoch ")[0]
        self.bar.set_description_str(label, refresh=False)
        self.bar.update((step - self.last_step) * self.batch_size)
        self.last_step = step
        if rung_changed:  # shown at once, however short the rung (tqdm otherwise redraws at most twice a second)
            self.bar.refresh()

    def start(self, seed: int) -> None:
        """The next training (a front candidate's repeat) uses ``seed``: the
        line starts again and names it."""
        self.close()
        self.seed = seed
        self.last_step = 0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress_for_terminal(rungs: list[float], batch_size: int, file: IO[str] | None = None):
    """A factory ``trial_number -> TrialProgress`` when ``file`` (default
    stdout) is a terminal, else None: nothing changes for files and pipes."""
    out = file or sys.stdout
    if not (hasattr(out, "isatty") and out.isatty()):
        return None
    return lambda trial_number: TrialProgress(trial_number, rungs, batch_size, out)
