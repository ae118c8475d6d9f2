"""Turning an image tree into uint8 tensors once, and keeping them: scanning an
ImageFolder tree, decoding it in forked worker processes, and the on-disk
tensor cache with its fingerprint (docs/design.md section 6)."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import multiprocessing
import os
import sys
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

from ..device import available_cores
from ..errors import DataError, one_line

# What torchvision.datasets.ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# Bumped whenever the layout of the cached object changes.
CACHE_FORMAT = 1
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
    signature: str  # of every image file of both splits, see hash_listing


def scan_imagefolder(name: str, root: Path) -> _Tree:
    if not root.is_dir():
        what = "folder" if name == "imagefolder" else f"{name} folder"
        raise DataError(f"{what} {root} does not exist; {DATA_HINT}")
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root} has no {' and no '.join(s + '/' for s in missing)} subfolder "
            f"(an ImageFolder tree needs train/<class>/ and test/<class>/); {DATA_HINT}"
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
        hash_listing(listing, [(rel, size, mtime_ns) for rel, _, size, mtime_ns in found])
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


def decode_imagefolder(tree: _Tree) -> dict:
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
    from torchvision.io import (  # lazy: torchvision costs ~2 s at import; a cache hit never needs it
        ImageReadMode,
        decode_image,
    )

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
    from PIL import Image  # lazy: Pillow only for formats torchvision cannot decode

    try:
        with Image.open(io.BytesIO(data)) as im:
            array = np.asarray(im.convert("RGB"))
    # UnidentifiedImageError is an OSError; some plugins raise SyntaxError or
    # ValueError for broken files.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode {path}: {one_line(exc)}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------
# cache


def hash_listing(listing, rows: list[tuple[str, int, int]]) -> None:
    """Add (relative path, size, mtime_ns) rows, in a fixed order, to the
    source signature: a cheap stand-in for the content of the files."""
    listing.update("".join(f"{rel}\0{size}\0{mtime_ns}\n" for rel, size, mtime_ns in rows).encode())


def fingerprint(content: dict) -> str:
    """sha256 of the decoded content (~0.2 s for CIFAR's 184 MB), computed
    once when the cache is built: it identifies the data a study ran on."""
    h = hashlib.sha256()
    h.update(json.dumps(content["classes"]).encode())
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        t = content[key]
        h.update(f"\n{key} {tuple(t.shape)} {t.dtype}\n".encode())
        h.update(memoryview(t.contiguous().numpy()).cast("B"))
    return h.hexdigest()


def read_cache(path: Path, name: str, source: str, signature: str) -> ImageData | None:
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
    if obj["format"] != CACHE_FORMAT or obj["name"] != name or obj["source"] != source:
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


def write_cache(path: Path, obj: dict) -> None:
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



DATA_HINT = (
    "pass --data DIR or set NAS_DATA (an ImageFolder tree with "
    "train/<class>/ and test/<class>/ image folders works)"
)



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
