"""What produced a result: the versions of this package and of the
libraries that decide its numbers. Studies, exported configs, training
results and calibrations all record it."""
from __future__ import annotations

import platform


def versions() -> dict[str, str]:
    import optuna
    import torch
    import torchvision

    from . import __version__

    # str(): torch's version is a str subclass that YAML will not represent
    return {"nas": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "optuna": str(optuna.__version__), "python": platform.python_version()}
