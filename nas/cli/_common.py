"""What several commands do the same way when they run: the fidelity
overrides of search and calibrate, the training progress display, Ctrl-C
during many trainings, and promote's and ablate's default --val-size."""
from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable

from ..errors import NasError


def override_fidelity(space, args: argparse.Namespace) -> None:
    """--epochs, --subset and --val-size of search and calibrate."""
    f = space.fidelity
    if args.epochs is not None:
        if args.epochs <= 0:
            raise NasError(f"--epochs: must be > 0, got {args.epochs:g}")
        if args.epochs <= f.warmup:
            raise NasError(f"--epochs: {args.epochs:g} must be longer than the space's warm-up "
                           f"(fidelity.warmup: {f.warmup:g} epochs)")
        f.rungs = [r for r in f.rungs if r < args.epochs] + [float(args.epochs)]
    if args.subset is not None:
        if args.subset < 1:
            raise NasError(f"--subset: must be >= 1, got {args.subset}")
        f.subset = args.subset
    if args.val_size is not None:
        if args.val_size < 1:
            raise NasError(f"--val-size: must be >= 1, got {args.val_size}")
        f.val_size = args.val_size


def progress_printer():
    """A tqdm bar with ETA on a terminal; plain lines every ~5 % otherwise
    (logs and CI capture)."""
    # the clock starts when training starts (the first call), and the first
    # line waits until a rate is known, so no line claims "eta 0s"
    state: dict = {"next": None}

    def update(step: int, total: int, loss: float) -> None:
        if sys.stderr.isatty():
            if "bar" not in state:
                from tqdm import tqdm  # lazy: a command loads its modules when it runs
                state["bar"] = tqdm(total=total, unit="step", dynamic_ncols=True)
            bar = state["bar"]
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.3f}")
            if step >= total:
                bar.close()
            return
        if state["next"] is None:
            state.update(start=time.perf_counter(), first=step, next=step + max(1, total // 20))
            if step < total:
                return
            state["first"] = 0
        if step >= state["next"] or step >= total:
            elapsed = time.perf_counter() - state["start"]
            eta = elapsed / (step - state["first"]) * (total - step)
            print(f"step {step}/{total}  loss {loss:.3f}  elapsed {elapsed:.0f}s  eta {eta:.0f}s", file=sys.stderr,
                  flush=True)
            state["next"] = step + max(1, total // 20)

    return update


# --------------------------------------------------------------------------- many trainings: calibrate, promote, ablate


def interruptible(run: Callable[[], object], study: str, command: str) -> object | None:
    """Run ``run()``; Ctrl-C or SIGTERM stores the running training as FAIL
    and says how to resume (None returned)."""
    import signal  # lazy: a command loads its modules when it runs

    from ..storage.backends import mask_url  # lazy: a command loads its modules when it runs

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return run()
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished trainings are stored in study {study!r}.\nresume with: {mask_url(command)}",
              file=sys.stderr)
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- promote, ablate


def default_as_none(val_size: int | None, dataset: str | None, data: str | None, *, config: str | None = None,
                    study=None) -> int | None:
    """--val-size of promote and ablate: None (the default) when it equals
    the default for the dataset (5,000, a tenth of a smaller training set),
    so an explicit default is the same budget as none given (a resumed
    promote or ablate is not refused as "another budget"). The dataset: its
    name from --dataset, else the config's meta.dataset (ablate) or the
    study's space (promote); its size from the (cached) images."""
    from ..training.splits import DEFAULT_VAL_SIZE  # lazy: a command loads its modules when it runs

    if val_size is None or not 1 <= val_size <= DEFAULT_VAL_SIZE:  # the default is never outside that
        return val_size
    if dataset is None and config is not None:
        from ..model.config import load_config  # lazy: a command loads its modules when it runs

        dataset = load_config(config).meta.get("dataset")
    if dataset is None and study is not None:
        from ..workflows.promote import space_of  # lazy: a command loads its modules when it runs

        dataset = space_of(study).fidelity.dataset
    return None if val_size == default_val_size_of(dataset or "cifar10", data) else val_size


def default_val_size_of(dataset: str, data: str | None) -> int:
    """The default number of validation images of ``dataset`` (read from
    ``data``, or its default folder)."""
    from ..training.splits import default_val_size  # lazy: a command loads its modules when it runs

    return default_val_size(num_train(dataset, data))


@functools.lru_cache(maxsize=4)
def num_train(dataset: str, data: str | None) -> int:
    """How many training images ``dataset`` has (its cached tensors, loaded
    once more: promote and ablate load them again themselves)."""
    from ..training.datasets import load_dataset  # lazy: a command loads its modules when it runs

    return len(load_dataset(dataset, data).train_labels)
