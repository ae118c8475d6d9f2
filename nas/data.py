"""Image datasets for proxy training (design.md, section 6).

CIFAR-10, CIFAR-100 (through torchvision) or any ImageFolder tree is decoded
once into uint8 tensors (N x 3 x H x W) and cached, so a search never touches
image files again.  ``make_splits`` carves a fixed, stratified validation set
(and optionally a stratified training subset) out of the training split; the
test split is kept apart for retraining a chosen config.

    python -m nas.data --data data/cifar10       # summary; run twice to see the cache
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import sys
import tarfile
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from nas.device import available_cores
from nas.errors import DataError, NasError, one_line

DATASETS = ("cifar10", "cifar100", "imagefolder")

# Validation images held out of CIFAR's 50,000 training images (design.md 6).
DEFAULT_VAL_SIZE = 5000

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
_OFFICIAL_CLASSES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}

# torchvision's on-disk layout of the python CIFAR archives (folder, files).
# Spelled out here, and checked against torchvision by a test, because
# importing torchvision costs ~2 s on this machine and a cache hit must not
# pay it just to stat six files.
_TORCHVISION_FILES = {
    "cifar10": ("cifar-10-batches-py", (
        "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
        "data_batch_5", "test_batch", "batches.meta",
    )),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}

# What torchvision.datasets.ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_HINT = (
    "pass --data DIR or set NAS_DATA (an ImageFolder tree with "
    "train/<class>/ and test/<class>/ image folders works)"
)

# Bumped whenever the layout of the cached object changes.
_CACHE_FORMAT = 1
# A temp file this old cannot belong to a live writer (it exists only while
# torch.save runs): it was left by a killed process and is deleted.
_STALE_TEMP_SECONDS = 3600

# Decoding strategy, measured on the offline CIFAR-10 copy (60,000 32x32
# JPEGs, both splits, file reads included) on this 2-vCPU machine, wall
# seconds, best of 3 (the machine was shared, so runs varied by ~30 %):
#   Pillow open+convert, 1 process             9.9
#   Pillow, 2 forked processes                 7.9
#   torchvision decode_image, 1 process        3.5  (same pixels as Pillow)
#   torchvision, 2 threads                     3.8  (no gain: the GIL
#                                                    serialises the per-image work)
#   torchvision, 2 forked processes            3.1  (each worker runs ~1.5x
#                                                    slower when both vCPUs are busy)
# So: torchvision's libjpeg-turbo decoder in forked worker processes, one per
# core.  Spawned workers are no option: `import torch, torchvision` alone takes
# ~5.5 s here.  Batched decode_jpeg(list) saves ~10 % over decode_image per
# file, but decode_image also reads PNG/WEBP/GIF and names the bad file;
# formats it lacks (BMP, TIFF, PPM) go through Pillow.
# The lossless PNG copy, the project's data since the JPEG one: 14.3 s for
# both splits through the same path (torchvision's PNG decoder, 2-vCPU AMD
# EPYC, cache miss), once per machine.
_PARALLEL_MIN_IMAGES = 4096  # below this, forking costs more than it saves
_MAX_DECODE_WORKERS = 8

# torchvision 0.29 deprecates its image decoders in favour of TorchCodec (not
# a dependency of this project); they still work, and the warning would fire
# once per image.
_TV_DEPRECATION = r"The image decoding and encoding capabilities of TorchVision are deprecated"


@dataclass(eq=False)
class ImageData:
    """A decoded dataset: uint8 images (N x 3 x H x W, contiguous) and int64
    labels (N) for the train and test splits."""

    name: str
    classes: list[str]
    train_images: torch.Tensor = field(repr=False)
    train_labels: torch.Tensor = field(repr=False)
    test_images: torch.Tensor = field(repr=False)
    test_labels: torch.Tensor = field(repr=False)
    fingerprint: str  # sha256 of the decoded images, labels and class names
    source: str  # the folder the images came from
    cache_file: str | None = None  # where the decoded tensors are cached
    cached: bool = False  # True if loaded from cache_file without decoding

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return tuple(self.train_images.shape[2:])


@dataclass(eq=False)
class Splits:
    """Sorted int64 indices into the training split: the images trained on,
    the search's validation images and (``confirm_size`` > 0) the
    confirmation images that ``promote``, ``ablate`` and ``train`` validate
    on, disjoint from the search's (docs/design.md section 6a)."""

    train: torch.Tensor
    val: torch.Tensor
    confirm: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))


# --------------------------------------------------------------------------
# loading


def load_dataset(
    name: str = "cifar10",
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ImageData:
    """Load a dataset, decoding it only if its cache is missing or stale.

    ``root``: the dataset folder; default env ``NAS_DATA``, else
    ``data/<name>`` under the current directory.  For cifar10/cifar100 a root
    with ``train/`` and ``test/`` subfolders is read as an ImageFolder tree
    whose class folders must be the dataset's classes; otherwise torchvision
    reads (and, if ``download``, fetches) its python archive there.
    ``cache_dir``: default env ``NAS_CACHE``, else ``~/.cache/nas``.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = _resolve_root(name, root)
    cache_root = _resolve_cache_dir(cache_dir)

    if name == "imagefolder" or _has_split_folders(root):
        tree = _scan_imagefolder(name, root)
        return _load_or_build(
            name, str(root), lambda: tree.signature, lambda: _decode_imagefolder(tree), cache_root
        )
    folder, _ = _TORCHVISION_FILES[name]
    return _load_or_build(
        name,
        str(root / folder),
        lambda: _torchvision_signature(name, root),
        lambda: _load_torchvision(name, root, download),
        cache_root,
    )


def _resolve_root(name: str, root: str | os.PathLike | None) -> Path:
    if root is None:
        root = os.environ.get("NAS_DATA") or Path("data") / name
    # Absolute, so messages and cache keys do not depend on the cwd.
    return Path(root).expanduser().absolute()


def _resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        cache_dir = os.environ.get("NAS_CACHE") or Path.home() / ".cache" / "nas"
    return Path(cache_dir).expanduser().absolute()


def _has_split_folders(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def _load_or_build(
    name: str,
    source: str,
    signature: Callable[[], str | None],
    build: Callable[[], dict],
    cache_root: Path,
) -> ImageData:
    """The cached content of `source` if its signature still matches, else
    build() it and cache it.  signature() is None while torchvision's files
    are missing (they exist after build() downloaded them)."""
    path = cache_root / f"{name}-{hashlib.sha256(source.encode()).hexdigest()[:16]}.pt"
    sig = signature()  # before decoding: a file changed meanwhile makes the cache stale, never wrong
    if sig is not None:
        hit = _read_cache(path, name, source, sig)
        if hit is not None:
            return hit
    content = build()
    if sig is None:  # torchvision has just downloaded the files
        sig = signature()
    content["fingerprint"] = _fingerprint(content)
    if sig is not None:
        _write_cache(path, {"format": _CACHE_FORMAT, "name": name, "source": source, "signature": sig, **content})
    return ImageData(name=name, source=source, cache_file=str(path), cached=False, **content)


# --------------------------------------------------------------------------
# ImageFolder trees


class _Split(NamedTuple):
    files: list[str]  # absolute paths, class by class, sorted within a class
    labels: list[int]


class _Tree(NamedTuple):
    root: Path
    classes: list[str]
    train: _Split
    test: _Split
    signature: str  # of every image file of both splits, see _hash_listing


def _scan_imagefolder(name: str, root: Path) -> _Tree:
    if not root.is_dir():
        what = "folder" if name == "imagefolder" else f"{name} folder"
        raise DataError(f"{what} {root} does not exist; {_HINT}")
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root} has no {' and no '.join(s + '/' for s in missing)} subfolder "
            f"(an ImageFolder tree needs train/<class>/ and test/<class>/); {_HINT}"
        )
    listing = hashlib.sha256()
    train_classes, train = _scan_split(root, "train", listing)
    test_classes, test = _scan_split(root, "test", listing)
    if test_classes != train_classes:
        raise DataError(
            f"class folders of {root / 'test'} differ from those of {root / 'train'}: "
            f"{_list_difference(train_classes, test_classes)}"
        )
    official = _OFFICIAL_CLASSES.get(name)
    if official is not None and train_classes != list(official):
        raise DataError(
            f"class folders of {root / 'train'} are not {name}'s {len(official)} classes: "
            f"{_list_difference(list(official), train_classes)}"
        )
    return _Tree(root, train_classes, train, test, listing.hexdigest())


def _scan_split(root: Path, split: str, listing) -> tuple[list[str], _Split]:
    split_dir = root / split
    # Dot-folders (.ipynb_checkpoints, .git) are never classes.
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{split_dir} has no class folders (expected {split_dir}/<class>/<image>)")
    files: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        found = _scan_images(str(split_dir / cls), f"{split}/{cls}")
        if not found:
            raise DataError(f"{split_dir / cls} holds no images ({' '.join(IMAGE_EXTENSIONS)})")
        found.sort()
        _hash_listing(listing, [(rel, size, mtime_ns) for rel, _, size, mtime_ns in found])
        files.extend(path for _, path, _, _ in found)
        labels.extend([label] * len(found))
    return classes, _Split(files, labels)


def _scan_images(folder: str, rel: str) -> list[tuple[str, str, int, int]]:
    """(relative path, path, size, mtime_ns) of the image files under folder,
    recursively (as ImageFolder does).  Plain strings and one stat per file:
    ~0.25 s for CIFAR's 60,000 files, where pathlib objects took 1 s."""
    found = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith("."):  # ._foo.jpg (macOS resource forks) is not an image
                continue
            if e.is_dir():
                found.extend(_scan_images(e.path, f"{rel}/{e.name}"))
            elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                st = e.stat()
                found.append((f"{rel}/{e.name}", e.path, st.st_size, st.st_mtime_ns))
    return found


def _decode_imagefolder(tree: _Tree) -> dict:
    train_images = _decode_all(tree.train.files, size=None, reference=None)
    size = tuple(train_images.shape[2:])
    # One input size for both splits: the model is profiled and trained at it.
    test_images = _decode_all(tree.test.files, size=size, reference="the training images")
    return {
        "classes": tree.classes,
        "train_images": train_images,
        "train_labels": torch.tensor(tree.train.labels, dtype=torch.int64),
        "test_images": test_images,
        "test_labels": torch.tensor(tree.test.labels, dtype=torch.int64),
    }


def _decode_all(paths: list[str], size: tuple[int, int] | None, reference: str | None) -> torch.Tensor:
    """Decode paths to one uint8 tensor N x 3 x H x W; every image must be
    `size` (default: the size of the first image)."""
    if size is None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TV_DEPRECATION, category=DeprecationWarning)
            size = tuple(_decode_file(paths[0]).shape[1:])
        reference = paths[0]
    workers = _decode_workers(len(paths))
    if workers == 1:
        return torch.from_numpy(_decode_files(paths, size, reference))
    # Chunks several times the worker count even out slow and fast chunks.
    n_chunks = workers * 4
    bounds = np.linspace(0, len(paths), n_chunks + 1).astype(int)
    chunks = [paths[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_decode_worker
    )
    try:
        parts = list(pool.map(_decode_files, chunks, repeat(size), repeat(reference)))
    finally:
        # On an error do not wait for the chunks still queued.
        pool.shutdown(wait=True, cancel_futures=True)
    return torch.from_numpy(np.concatenate(parts))


def _decode_workers(n_images: int) -> int:
    if n_images < _PARALLEL_MIN_IMAGES or sys.platform != "linux":
        return 1  # fork is only safe and cheap enough on Linux
    if multiprocessing.current_process().daemon:
        return 1  # a daemonic process (e.g. a multiprocessing.Pool worker) may not have children
    return max(1, min(available_cores(), _MAX_DECODE_WORKERS))


def _init_decode_worker() -> None:
    # A forked child must not start an OpenMP team (libgomp is not fork-safe
    # once the parent has used it); the workers already fill the cores.
    torch.set_num_threads(1)


def _decode_files(paths: Sequence[str], size: tuple[int, int], reference: str) -> np.ndarray:
    """Decode to an (n, 3, H, W) uint8 array, checking each image is `size`."""
    out = np.empty((len(paths), 3, *size), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TV_DEPRECATION, category=DeprecationWarning)
        for i, path in enumerate(paths):
            image = _decode_file(path)
            if tuple(image.shape[1:]) != size:
                h, w = image.shape[1:]
                raise DataError(
                    f"{path} is {w}x{h} pixels but {reference} is {size[1]}x{size[0]}; "
                    f"all images of a dataset must have one size (resize them first)"
                )
            out[i] = image.numpy()
    return out


@functools.cache
def _torchvision_decoder() -> Callable[[torch.Tensor], torch.Tensor]:
    # Imported on first use: a cache hit must not pay torchvision's import.
    from torchvision.io import ImageReadMode, decode_image

    return functools.partial(decode_image, mode=ImageReadMode.RGB)


def _decode_file(path: str) -> torch.Tensor:
    """One image file as an RGB uint8 tensor 3 x H x W.  Callers silence
    torchvision's deprecation warning (see _TV_DEPRECATION)."""
    # os.open/os.read: twice as fast as open().read() for small files, ~0.5 s
    # less for 60,000; bytearray because torch.frombuffer wants it writable.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        data = bytearray(os.read(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)
    if not data:
        raise DataError(f"cannot decode {path}: the file is empty")
    try:
        image = _torchvision_decoder()(torch.frombuffer(data, dtype=torch.uint8))
    except RuntimeError:
        # Not a format torchvision decodes (BMP, TIFF, PPM), or damaged: Pillow
        # reads the former and words the error for the latter.
        return _decode_with_pillow(path, data)
    if image.ndim == 4:  # animated GIF: the first frame, as Pillow gives
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNG: keep the high byte
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def _decode_with_pillow(path: str, data: bytearray) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            array = np.asarray(im.convert("RGB"))
    # UnidentifiedImageError is an OSError; some plugins raise SyntaxError or
    # ValueError for broken files.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode {path}: {one_line(exc)}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------
# torchvision CIFAR archives


def _torchvision_signature(name: str, root: Path) -> str | None:
    """Signature of the archive's files, or None if one is missing."""
    folder, files = _TORCHVISION_FILES[name]
    rows = []
    for filename in files:
        try:
            st = os.stat(root / folder / filename)
        except FileNotFoundError:
            return None
        rows.append((f"{folder}/{filename}", st.st_size, st.st_mtime_ns))
    listing = hashlib.sha256()
    _hash_listing(listing, rows)
    return listing.hexdigest()


def _load_torchvision(name: str, root: Path, download: bool) -> dict:
    from torchvision import datasets

    dataset_cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    try:
        # torchvision verifies every file's md5, so a damaged archive ends up here too.
        train = dataset_cls(str(root), train=True, download=download)
        test = dataset_cls(str(root), train=False, download=False)  # the first call fetched both splits
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, tarfile.TarError) as exc:
        folder, _ = _TORCHVISION_FILES[name]
        fetch = "could not be downloaded" if download else "download is off"
        raise DataError(
            f"{name}: no usable data in {root}: no train/ and test/ ImageFolder subfolders, "
            f"and torchvision's {folder}/ is missing or damaged and {fetch} "
            f"({type(exc).__name__}: {one_line(exc)}); {_HINT}"
        ) from exc
    # .data is an N x H x W x 3 view of an N x 3 x H x W array: the permute
    # gives the contiguous layout back without a copy.
    return {
        "classes": list(train.classes),
        "train_images": torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous(),
        "train_labels": torch.tensor(train.targets, dtype=torch.int64),
        "test_images": torch.from_numpy(test.data).permute(0, 3, 1, 2).contiguous(),
        "test_labels": torch.tensor(test.targets, dtype=torch.int64),
    }


# --------------------------------------------------------------------------
# cache


def _hash_listing(listing, rows: list[tuple[str, int, int]]) -> None:
    """Add (relative path, size, mtime_ns) rows, in a fixed order, to the
    source signature: a cheap stand-in for the content of the files."""
    listing.update("".join(f"{rel}\0{size}\0{mtime_ns}\n" for rel, size, mtime_ns in rows).encode())


def _fingerprint(content: dict) -> str:
    """sha256 of the decoded content (~0.2 s for CIFAR's 184 MB), computed
    once when the cache is built: it identifies the data a study ran on."""
    h = hashlib.sha256()
    h.update(json.dumps(content["classes"]).encode())
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        t = content[key]
        h.update(f"\n{key} {tuple(t.shape)} {t.dtype}\n".encode())
        h.update(memoryview(t.contiguous().numpy()).cast("B"))
    return h.hexdigest()


def _read_cache(path: Path, name: str, source: str, signature: str) -> ImageData | None:
    """The cached dataset, or None if there is none, it is stale or damaged."""
    if not path.is_file():
        return None
    try:
        # torch.load is ~0.15 s for CIFAR's 184 MB from the page cache; numpy
        # would be a little faster but needs one file per tensor.
        obj = torch.load(path, weights_only=True)
    except Exception as exc:  # whatever a damaged file makes torch.load raise, rebuilding fixes it
        warnings.warn(f"cache file {path} is unreadable ({type(exc).__name__}: {one_line(exc)}); rebuilding it")
        return None
    problem = _cache_problem(obj)
    if problem:
        warnings.warn(f"cache file {path} is damaged ({problem}); rebuilding it")
        return None
    if obj["format"] != _CACHE_FORMAT or obj["name"] != name or obj["source"] != source:
        return None
    if obj["signature"] != signature:
        return None
    return ImageData(
        name=name,
        classes=obj["classes"],
        train_images=obj["train_images"],
        train_labels=obj["train_labels"],
        test_images=obj["test_images"],
        test_labels=obj["test_labels"],
        fingerprint=obj["fingerprint"],
        source=source,
        cache_file=str(path),
        cached=True,
    )


def _cache_problem(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return f"holds a {type(obj).__name__}, not a dict"
    for key, kind in (("format", int), ("name", str), ("source", str), ("signature", str),
                      ("fingerprint", str), ("classes", list)):
        if not isinstance(obj.get(key), kind):
            return f"{key!r} missing or not a {kind.__name__}"
    for split in ("train", "test"):
        images, labels = obj.get(f"{split}_images"), obj.get(f"{split}_labels")
        if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4):
            return f"{split}_images is not a uint8 N x C x H x W tensor"
        if not (isinstance(labels, torch.Tensor) and labels.dtype == torch.int64
                and labels.shape == images.shape[:1]):
            return f"{split}_labels does not match {split}_images"
    return None


def _write_cache(path: Path, obj: dict) -> None:
    """Write atomically: readers see the old file or the new one, never half
    of one.  No fsync: after a power loss a damaged file is just rebuilt."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        # The data is decoded and usable; only the next load will be slower.
        warnings.warn(f"could not write cache file {path} ({one_line(exc)}); the next load decodes again")
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _remove_stale_temps(path: Path) -> None:
    cutoff = time.time() - _STALE_TEMP_SECONDS
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except FileNotFoundError:  # another process cleaned it up first
            pass


# --------------------------------------------------------------------------
# splits and statistics


def default_val_size(num_train: int) -> int:
    """DEFAULT_VAL_SIZE, or a tenth of a training set smaller than 50,000."""
    return max(1, min(DEFAULT_VAL_SIZE, num_train // 10))


def make_splits(labels, val_size: int, seed: int = 0, subset: int | None = None, *,
                allow_no_val: bool = False, confirm_size: int = 0) -> Splits:
    """Stratified validation split of the training set, and optionally a
    stratified subset of what remains for training. ``allow_no_val``:
    ``val_size`` 0 is allowed and holds nothing out (a final training run on
    every training image; a search always needs a validation split).

    Each class gets a share of ``val_size`` (and of ``subset``) proportional
    to its frequency, rounded by largest remainder so the total is exact.
    Indices are drawn with a torch.Generator seeded with ``seed``; the
    validation set does not depend on ``subset``, and for one seed a smaller
    subset is contained in a larger one (up to rounding of the shares).

    ``confirm_size`` > 0 holds out a second stratified split, the
    confirmation images, drawn right after the validation images of each
    class (so the validation split is the same with or without it) and kept
    out of the training images too: a design chosen on the validation images
    is confirmed on images that played no part in choosing it.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    n = labels.numel()
    _check_count("val_size", val_size, n - 1, f"the training set has {n} images and keeps at least one",
                 minimum=0 if allow_no_val else 1)
    if confirm_size:
        _check_count("confirm_size", confirm_size, n - 1 - val_size,
                     f"{n - val_size} images remain after the validation split and training keeps at least one")

    generator = torch.Generator().manual_seed(int(seed))
    _, counts = torch.unique(labels, return_counts=True)
    by_class = torch.split(torch.argsort(labels, stable=True), counts.tolist())
    val_parts, confirm_parts, rest = [], [], []
    confirm_shares = _allocate(counts.tolist(), confirm_size)
    for indices, k, c in zip(by_class, _allocate(counts.tolist(), val_size), confirm_shares):
        shuffled = indices[torch.randperm(len(indices), generator=generator)]
        val_parts.append(shuffled[:k])
        confirm_parts.append(shuffled[k:k + c])
        rest.append(shuffled[k + c:])

    if subset is not None:
        available = n - val_size - confirm_size
        why = f"{available} training images remain after the validation split"
        _check_count("subset", subset, available, why)
        # The rest is already in random order, so a prefix is a random sample.
        rest = [r[:k] for r, k in zip(rest, _allocate([len(r) for r in rest], subset))]
    return Splits(train=torch.cat(rest).sort().values, val=torch.cat(val_parts).sort().values,
                  confirm=torch.cat(confirm_parts).sort().values)


def _allocate(counts: list[int], total: int) -> list[int]:
    """Split `total` over classes in proportion to `counts`, largest
    remainder first (ties: lower class first).  Exact integer arithmetic; no
    share exceeds its count as long as total <= sum(counts)."""
    n = sum(counts)
    shares = [total * c // n for c in counts]
    remainders = [total * c % n for c in counts]
    for i in sorted(range(len(counts)), key=lambda i: (-remainders[i], i))[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _check_count(arg: str, value, maximum: int, why: str, minimum: int = 1) -> None:
    if maximum < minimum:
        raise DataError(f"{arg} cannot be chosen: {why}")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value <= maximum:
        raise DataError(f"{arg} must be an integer from {minimum} to {maximum} ({why}), got {value!r}")


# Values per chunk in channel_stats: 16 MB of int32, whatever the image size.
_STATS_CHUNK_VALUES = 1 << 22


def channel_stats(
    images: torch.Tensor, indices: torch.Tensor | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std on the 0..1 scale of uint8
    images N x C x H x W, or of ``images[indices]`` (gathered chunk by chunk).

    Sums are exact integers, accumulated over chunks of ~4M values, so neither
    a float copy of the whole set nor cancellation in var = E[x^2] - E[x]^2.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 N x C x H x W tensor, got {images.dtype} {tuple(images.shape)}")
    total = images.shape[0] if indices is None else len(indices)
    if total == 0:
        raise ValueError("channel_stats needs at least one image")
    channels = images.shape[1]
    per_image = images[0].numel()
    chunk = max(1, _STATS_CHUNK_VALUES // per_image)
    sums = torch.zeros(channels, dtype=torch.int64)
    squares = torch.zeros(channels, dtype=torch.int64)
    for start in range(0, total, chunk):
        part = images[start:start + chunk] if indices is None else images[indices[start:start + chunk]]
        part = part.to(torch.int32)
        sums += part.sum(dim=(0, 2, 3), dtype=torch.int64)
        squares += (part * part).sum(dim=(0, 2, 3), dtype=torch.int64)
    count = total * per_image // channels
    means, stds = [], []
    for s, sq in zip(sums.tolist(), squares.tolist()):
        means.append(s / count / 255)
        stds.append(((count * sq - s * s) / (count * count)) ** 0.5 / 255)
    return tuple(means), tuple(stds)


def _list_difference(expected: list[str], found: list[str]) -> str:
    def names(items):
        shown = ", ".join(items[:5])
        return shown + (f" and {len(items) - 5} more" if len(items) > 5 else "")

    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    parts = []
    if missing:
        parts.append(f"missing {names(missing)}")
    if extra:
        parts.append(f"unexpected {names(extra)}")
    return "; ".join(parts) or f"same names in a different order: {names(found)}"


# --------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nas.data",
        description="Load (decode once, then cache) a dataset and print its splits and statistics.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="cifar10")
    parser.add_argument("--data", metavar="DIR", help="dataset folder (default: $NAS_DATA, else data/<dataset>)")
    parser.add_argument("--val-size", type=int, metavar="N",
                        help=f"validation images (default: {DEFAULT_VAL_SIZE}, at most a tenth of the train set)")
    parser.add_argument("--subset", type=int, metavar="N", help="train on a stratified subset of N images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="decoded-tensor cache (default: $NAS_CACHE, else ~/.cache/nas)")
    args = parser.parse_args(argv)

    try:
        start = time.perf_counter()
        data = load_dataset(args.dataset, args.data, args.cache_dir)
        load_seconds = time.perf_counter() - start
        val_size = args.val_size if args.val_size is not None else default_val_size(len(data.train_labels))
        splits = make_splits(data.train_labels, val_size, seed=args.seed, subset=args.subset)
    except NasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    mean, std = channel_stats(data.train_images, splits.train)
    train_counts = torch.bincount(data.train_labels[splits.train], minlength=data.num_classes).tolist()
    val_counts = torch.bincount(data.train_labels[splits.val], minlength=data.num_classes).tolist()
    test_counts = torch.bincount(data.test_labels, minlength=data.num_classes).tolist()
    h, w = data.image_size
    print(f"source:      {data.source}")
    more = ", ..." if data.num_classes > 10 else ""
    print(f"classes:     {data.num_classes} ({', '.join(data.classes[:10])}{more})")
    print(f"image size:  3 x {h} x {w} (uint8)")
    subset_note = f", subset {args.subset}" if args.subset is not None else ""
    print(f"splits:      train {len(splits.train)} / val {len(splits.val)} / test {len(data.test_labels)}"
          f"  (seed {args.seed}{subset_note})")
    width = max(len(c) for c in data.classes)
    print(f"  {'class':<{width}}  {'train':>7} {'val':>7} {'test':>7}")
    for cls, a, b, c in zip(data.classes, train_counts, val_counts, test_counts):
        print(f"  {cls:<{width}}  {a:>7} {b:>7} {c:>7}")
    print(f"train mean:  {' '.join(f'{m:.4f}' for m in mean)}")
    print(f"train std:   {' '.join(f'{s:.4f}' for s in std)}")
    print(f"fingerprint: {data.fingerprint}")
    how = "cache hit" if data.cached else "decoded, cache miss"
    print(f"load time:   {load_seconds:.2f} s ({how}: {data.cache_file})")
    return 0


if __name__ == "__main__":
    # Run nas.data's own main, not this __main__ copy of the module, so that
    # functions sent to decode workers and the classes returned are nas.data's.
    from nas.data import main as _main

    sys.exit(_main())
