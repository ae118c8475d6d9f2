import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
import torch

# Deep randomly initialised nets produce denormal floats, which run ~100x
# slower on x86 CPUs; the trainer flushes them too.
torch.set_flush_denormal(True)


# --- offline CIFAR-10 (owned by tests/test_data.py) ---------------------------

REPO = Path(__file__).resolve().parents[1]
CIFAR10_TARBALL = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def _is_cifar10_tree(path: Path) -> bool:
    from nas.data import CIFAR10_CLASSES

    return all((path / split / cls).is_dir() for split in ("train", "test") for cls in CIFAR10_CLASSES)


def _unpack_cifar10(target: Path, tmp_path_factory) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()  # e.g. left empty by a torchvision download that failed offline
    if target.exists():
        # Not ours to overwrite: unpack into this session's temp dir instead.
        target = tmp_path_factory.mktemp("cifar10")
    # Unpack beside the target and rename, so an interrupted run never leaves
    # a half-unpacked tree that the next run would take for complete.
    tmp = Path(tempfile.mkdtemp(prefix=".cifar10-unpack-", dir=target.parent))
    try:
        if shutil.which("tar"):  # ~1.5 s; Python's tarfile takes ~14 s for these 60,000 files
            subprocess.run(["tar", "xzf", str(CIFAR10_TARBALL), "-C", str(tmp)], check=True)
        else:
            with tarfile.open(CIFAR10_TARBALL) as archive:
                archive.extractall(tmp, filter="data")
        if target.exists():  # our own, empty mktemp dir
            target.rmdir()
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_cifar10_tree(target):  # another session unpacked it at the same time
            return target
        raise
    return target


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """The offline CIFAR-10 ImageFolder tree: $NAS_DATA if it is one, else
    <repo>/data/cifar10, unpacked there from ../shared/data on first use."""
    env = os.environ.get("NAS_DATA")
    if env and _is_cifar10_tree(Path(env)):
        return Path(env).absolute()
    target = REPO / "data" / "cifar10"
    if _is_cifar10_tree(target):
        return target
    if not CIFAR10_TARBALL.is_file():
        pytest.skip(
            f"offline CIFAR-10 not found: NAS_DATA is not a CIFAR-10 ImageFolder tree, "
            f"{target} has no train/ and test/, and {CIFAR10_TARBALL} does not exist"
        )
    return _unpack_cifar10(target, tmp_path_factory)
