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



def pytest_configure(config):
    """Under pytest-xdist (``-n N``, the README's test command): each worker
    process gets its own share of the cores (CPU affinity), which the CLI
    processes a test starts inherit, so N workers never run N x cores
    compute threads on the machine (oversubscribed intra-op threads spin
    against each other). Most of a test's time is single-threaded (process
    start-up, imports, storage I/O), which is what running N at once wins."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < count:
        return
    share = cores[int(worker.removeprefix("gw")) % count::count]
    os.sched_setaffinity(0, share)
    torch.set_num_threads(len(share))


@pytest.fixture(autouse=True)
def _same_torch_state_for_every_test():
    """Every test starts from the same global torch state, whatever ran
    before it: the random generator seeded, and the settings that code under
    test may change (thread count, default dtype, grad mode, determinism,
    oneDNN) put back afterwards. A test's outcome then never depends on the
    order the suite runs in."""
    threads = torch.get_num_threads()
    dtype = torch.get_default_dtype()
    grad = torch.is_grad_enabled()
    deterministic = torch.are_deterministic_algorithms_enabled()
    mkldnn = torch.backends.mkldnn.enabled
    torch.manual_seed(0)
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.mkldnn.enabled = mkldnn
    torch.set_flush_denormal(True)


@pytest.fixture
def tiny_data():
    """64 random 32x32 images of 10 classes as a search's training data (48
    to train, 16 to validate): enough for trials whose trainer is real but
    tiny, or stood in."""
    from nas.training.evaluate import TrainingData

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(64) % 10
    return TrainingData(images[:48], labels[:48], images[48:], labels[48:], (0.5,) * 3, (0.25,) * 3, 10, 32, "f" * 64)


class TrainingCounter:
    """Counts the trainings :mod:`nas.training.evaluate` starts; the ``interrupt_at``-th
    one raises KeyboardInterrupt before training, as a Ctrl-C would (0:
    none)."""

    def __init__(self, monkeypatch) -> None:
        import nas.training.evaluate

        self.started, self.interrupt_at = 0, 0
        real = nas.training.evaluate.train

        def counted(*args, **kwargs):
            self.started += 1
            if self.started == self.interrupt_at:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(nas.training.evaluate, "train", counted)

    def reset(self, interrupt_at: int = 0) -> None:
        self.started, self.interrupt_at = 0, interrupt_at


@pytest.fixture
def trainings(monkeypatch) -> TrainingCounter:
    return TrainingCounter(monkeypatch)


# --- offline CIFAR-10 (owned by tests/test_data.py) ---------------------------

REPO = Path(__file__).resolve().parents[1]
# The original pixels, losslessly as PNG; the JPEG copy beside it is only for
# benchmarks/jpeg_quality.py.
CIFAR10_TARBALL = REPO.parent / "shared" / "data" / "cifar10-png.tar.gz"


def _is_cifar10_tree(path: Path) -> bool:
    """A CIFAR-10 ImageFolder tree of the lossless copy (a JPEG tree in the
    same place is not taken for it)."""
    from nas.training.decode import CIFAR10_CLASSES

    return all((path / split / cls).is_dir() for split in ("train", "test") for cls in CIFAR10_CLASSES) and (
        path / "train" / CIFAR10_CLASSES[0] / "0000.png").is_file()


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
    """The offline CIFAR-10 ImageFolder tree (original pixels, PNG): $NAS_DATA
    if it is one, else <repo>/data/cifar10, unpacked there from ../shared/data
    on first use (into a temporary folder if data/cifar10 holds something
    else, such as the JPEG copy)."""
    env = os.environ.get("NAS_DATA")
    if env and _is_cifar10_tree(Path(env)):
        return Path(env).absolute()
    target = REPO / "data" / "cifar10"
    if _is_cifar10_tree(target):
        return target
    if not CIFAR10_TARBALL.is_file():
        pytest.skip(
            f"offline CIFAR-10 not found: NAS_DATA is not the lossless CIFAR-10 ImageFolder tree, "
            f"{target} is not one either (train/ and test/ of PNGs), and {CIFAR10_TARBALL} does not exist"
        )
    return _unpack_cifar10(target, tmp_path_factory)


def stop_server(proc: subprocess.Popen, signum: int, timeout: float = 30) -> None:
    """Stop a server a test started (dashboard, storage proxy) the way a
    user would (``signum``), killing it if it does not exit in time."""
    proc.send_signal(signum)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
