"""What produced a result: the versions of this package and of the
libraries that decide its numbers. Studies, exported configs, training
results and calibrations all record it."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
from pathlib import Path

import optuna
import torch

#: the package's one version number (``nas.__version__``; pyproject.toml reads it from here)
__version__ = "0.2.0"


def _torchvision_version() -> str:
    """torchvision's ``__version__`` (with its build tag, e.g. ``+cu130``)
    read from its ``version.py``: importing torchvision takes seconds, and
    every new study records this."""
    spec = importlib.util.find_spec("torchvision")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "version.py"
        if path.is_file():
            m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", path.read_text(), re.M)
            if m:
                return m.group(1)
    return importlib.metadata.version("torchvision")


def versions() -> dict[str, str]:
    # str(): torch's version is a str subclass that YAML will not represent
    return {"nas": __version__, "torch": str(torch.__version__), "torchvision": _torchvision_version(),
            "optuna": str(optuna.__version__), "python": platform.python_version()}
