"""Tests of nas.training (datasets, decode, splits): loading, caching, splits, statistics and the CLI."""

import errno
import os
import pickle
import re
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nas.training.datasets as data_mod
from nas.errors import DataError
from nas.training import decode, splits
from nas.training.datasets import load_dataset, main
from nas.training.decode import CIFAR10_CLASSES
from nas.training.splits import (
    DEFAULT_VAL_SIZE,
    channel_stats,
    default_val_size,
    make_splits,
)

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog", "frog")
TENSORS = ("train_images", "train_labels", "test_images", "test_labels")


# --------------------------------------------------------------------------
# helpers


def write_image(path: Path, rng, size=(8, 6)) -> np.ndarray:
    """Random RGB image of size (width, height), format from the suffix."""
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def make_tree(root: Path, per_class=None, classes=CLASSES, seed=0) -> Path:
    """ImageFolder tree; even-numbered images are PNG, odd ones JPEG."""
    rng = np.random.default_rng(seed)
    for split, n in (per_class or {"train": 4, "test": 2}).items():
        for cls in classes:
            for i in range(n):
                write_image(root / split / cls / f"{i:03d}{'.png' if i % 2 == 0 else '.jpg'}", rng)
    return root


def touch_later(path: Path) -> None:
    # File timestamps can be coarser than two quick writes; make the change visible.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def refuse(*args, **kwargs):
    raise AssertionError("decoded although the cache is valid")


def assert_one_line(exc: BaseException, *parts: str) -> str:
    message = str(exc)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def assert_same_content(a, b) -> None:
    assert a.classes == b.classes
    assert a.fingerprint == b.fingerprint
    for key in TENSORS:
        assert torch.equal(getattr(a, key), getattr(b, key)), key


# --------------------------------------------------------------------------
# validation split and subset

# 50 / 30 / 20 images of classes 0 / 1 / 2, shuffled.
LABELS = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
LABELS = LABELS[torch.randperm(100, generator=torch.Generator().manual_seed(1))]


def test_validation_split_is_exact_stratified_disjoint_and_covering():
    splits = make_splits(LABELS, 19, seed=0)
    assert splits.val.dtype == splits.train.dtype == torch.int64
    assert len(splits.val) == 19
    # 19 * (50, 30, 20) / 100 = 9.5, 5.7, 3.8: floors 9, 5, 3 and the two
    # left over go to the largest remainders, classes 2 and 1.
    assert torch.bincount(LABELS[splits.val]).tolist() == [9, 6, 4]
    assert torch.bincount(LABELS[splits.train]).tolist() == [41, 24, 16]
    assert torch.equal(splits.val, splits.val.sort().values)
    assert torch.equal(splits.train, splits.train.sort().values)
    assert not set(splits.val.tolist()) & set(splits.train.tolist())
    assert torch.equal(torch.cat([splits.train, splits.val]).sort().values, torch.arange(100))


def test_validation_split_of_balanced_cifar_sized_labels():
    labels = torch.arange(50_000) % 10
    splits = make_splits(labels, DEFAULT_VAL_SIZE, seed=3)
    assert torch.bincount(labels[splits.val]).tolist() == [500] * 10
    assert len(splits.train) == 45_000


def test_split_is_deterministic_for_a_seed_and_differs_between_seeds():
    a, b, c = make_splits(LABELS, 19, seed=5), make_splits(LABELS, 19, seed=5), make_splits(LABELS, 19, seed=6)
    assert torch.equal(a.val, b.val) and torch.equal(a.train, b.train)
    assert not torch.equal(a.val, c.val)
    assert torch.bincount(LABELS[c.val]).tolist() == [9, 6, 4]


def test_subset_is_stratified_part_of_train_and_leaves_validation_alone():
    full = make_splits(LABELS, 19, seed=0)
    sub = make_splits(LABELS, 19, seed=0, subset=40)
    assert torch.equal(sub.val, full.val)
    assert len(sub.train) == 40
    # 40 * (41, 24, 16) / 81 = 20.25, 11.85, 7.9 -> 20, 11, 7, plus one each
    # for the largest remainders, classes 2 and 1.
    assert torch.bincount(LABELS[sub.train]).tolist() == [20, 12, 8]
    assert set(sub.train.tolist()) <= set(full.train.tolist())
    assert torch.equal(sub.train, sub.train.sort().values)
    assert torch.equal(sub.train, make_splits(LABELS, 19, seed=0, subset=40).train)
    assert not torch.equal(sub.train, make_splits(LABELS, 19, seed=1, subset=40).train)
    # One seed's subsets grow by adding images, so fidelity rungs share data.
    assert set(make_splits(LABELS, 19, seed=0, subset=20).train.tolist()) <= set(sub.train.tolist())


def test_subset_may_take_all_remaining_images():
    assert torch.equal(make_splits(LABELS, 19, subset=81).train, make_splits(LABELS, 19).train)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"val_size": 0}, "val_size must be an integer from 1 to 99"),
        ({"val_size": 100}, "val_size must be an integer from 1 to 99"),
        ({"val_size": -3}, "val_size must be an integer from 1 to 99"),
        ({"val_size": 2.5}, "val_size must be an integer from 1 to 99"),
        ({"val_size": True}, "val_size must be an integer from 1 to 99"),
        ({"val_size": 19, "subset": 0}, "subset must be an integer from 1 to 81"),
        ({"val_size": 19, "subset": 82}, "subset must be an integer from 1 to 81"),
    ],
)
def test_bad_sizes_name_the_argument_and_the_range(kwargs, expected):
    with pytest.raises(DataError) as info:
        make_splits(LABELS, **kwargs)
    assert_one_line(info.value, expected)


def test_labels_must_be_integers():
    with pytest.raises(ValueError, match="1-D integer"):
        make_splits(torch.rand(10), 2)


def test_default_val_size():
    assert default_val_size(50_000) == DEFAULT_VAL_SIZE == 5000
    assert default_val_size(1000) == 100
    assert default_val_size(5) == 1


# --------------------------------------------------------------------------
# channel statistics


def test_channel_stats_match_float64_reference(monkeypatch):
    images = torch.randint(0, 256, (70, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    # Chunks of 8 images, the last one ragged (70 = 8 * 8 + 6).
    monkeypatch.setattr(splits, "_STATS_CHUNK_VALUES", 8 * 3 * 5 * 7)
    for indices in (None, torch.tensor([69, 3, 10, 11, 40, 41, 42, 43, 44, 45, 46, 47, 48])):
        subset = images if indices is None else images[indices]
        reference = subset.double() / 255
        mean, std = channel_stats(images, indices)
        assert mean == pytest.approx(reference.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
        assert std == pytest.approx(reference.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-12)


def test_channel_stats_of_constant_images_are_exact():
    mean, std = channel_stats(torch.full((4, 3, 2, 2), 255, dtype=torch.uint8))
    assert mean == (1.0, 1.0, 1.0)
    assert std == (0.0, 0.0, 0.0)


def test_channel_stats_want_uint8_images():
    with pytest.raises(ValueError, match="uint8"):
        channel_stats(torch.rand(2, 3, 4, 4))


# --------------------------------------------------------------------------
# ImageFolder loading and the cache


def test_imagefolder_is_decoded_in_imagefolder_order(tmp_path):
    root = make_tree(tmp_path / "tree")
    data = load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    assert data.name == "imagefolder"
    assert data.source == str(root)
    assert data.classes == list(CLASSES)
    assert not data.cached
    assert data.image_size == (6, 8)
    for images, n in ((data.train_images, 12), (data.test_images, 6)):
        assert images.shape == (n, 3, 6, 8)
        assert images.dtype == torch.uint8 and images.is_contiguous()
    assert data.train_labels.dtype == torch.int64
    assert data.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert data.test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    files = sorted((root / "train").rglob("*.*"))
    for image, path in zip(data.train_images, files):
        expected = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
        if path.suffix == ".png":  # lossless: exactly the written pixels
            np.testing.assert_array_equal(image.numpy(), expected)
        else:  # JPEG decoders may round differently
            assert np.abs(image.numpy().astype(int) - expected).max() <= 2, path


def test_cache_hit_does_not_decode(tmp_path, monkeypatch):
    root, cache = make_tree(tmp_path / "tree"), tmp_path / "cache"
    first = load_dataset("imagefolder", root, cache_dir=cache)
    assert Path(first.cache_file).parent == cache and Path(first.cache_file).is_file()
    monkeypatch.setattr(decode, "_decode_file", refuse)
    second = load_dataset("imagefolder", root, cache_dir=cache)
    assert second.cached
    assert second.cache_file == first.cache_file
    assert_same_content(first, second)


def test_changed_or_added_files_are_decoded_again(tmp_path, monkeypatch):
    root, cache = make_tree(tmp_path / "tree"), tmp_path / "cache"
    first = load_dataset("imagefolder", root, cache_dir=cache)

    changed = root / "train" / "dog" / "000.png"  # index 4: the first dog
    new_pixels = write_image(changed, np.random.default_rng(99))
    touch_later(changed)
    second = load_dataset("imagefolder", root, cache_dir=cache)
    assert not second.cached
    assert second.fingerprint != first.fingerprint
    np.testing.assert_array_equal(second.train_images[4].numpy(), new_pixels.transpose(2, 0, 1))
    assert torch.equal(second.train_images[:4], first.train_images[:4])

    write_image(root / "test" / "frog" / "100.png", np.random.default_rng(7))
    third = load_dataset("imagefolder", root, cache_dir=cache)
    assert not third.cached
    assert len(third.test_labels) == 7 and third.test_labels[-1] == 2
    assert third.fingerprint not in (first.fingerprint, second.fingerprint)

    monkeypatch.setattr(decode, "_decode_file", refuse)
    fourth = load_dataset("imagefolder", root, cache_dir=cache)
    assert fourth.cached
    assert_same_content(third, fourth)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not a cache"])
def test_damaged_cache_file_is_rebuilt(tmp_path, damage):
    root, cache = make_tree(tmp_path / "tree"), tmp_path / "cache"
    first = load_dataset("imagefolder", root, cache_dir=cache)
    cache_file = Path(first.cache_file)
    if damage == "garbage":
        cache_file.write_bytes(b"this is not a torch file")
    elif damage == "truncated":  # what a killed non-atomic writer would leave
        cache_file.write_bytes(cache_file.read_bytes()[: cache_file.stat().st_size // 2])
    elif damage == "empty":
        cache_file.write_bytes(b"")
    else:
        torch.save({"format": 1, "train_images": [1, 2, 3]}, cache_file)
    with pytest.warns(UserWarning, match="rebuilding it"):
        second = load_dataset("imagefolder", root, cache_dir=cache)
    assert not second.cached
    assert_same_content(first, second)
    assert load_dataset("imagefolder", root, cache_dir=cache).cached


def test_failed_cache_write_keeps_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    root, cache = make_tree(tmp_path / "tree"), tmp_path / "cache"
    cache_file = Path(load_dataset("imagefolder", root, cache_dir=cache).cache_file)
    before = cache_file.read_bytes()
    write_image(root / "train" / "cat" / "100.png", np.random.default_rng(3))

    def disk_full(obj, f):
        f.write(b"half a cache file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data_mod.torch, "save", disk_full)
    with pytest.warns(UserWarning, match="could not write cache file"):
        data = load_dataset("imagefolder", root, cache_dir=cache)
    assert len(data.train_labels) == 13  # the data itself is fine
    assert cache_file.read_bytes() == before
    assert sorted(p.name for p in cache.iterdir()) == [cache_file.name]


def test_temp_files_left_by_killed_writers_are_removed(tmp_path):
    root, cache = make_tree(tmp_path / "tree"), tmp_path / "cache"
    cache_file = Path(load_dataset("imagefolder", root, cache_dir=cache).cache_file)
    stale = cache / f".{cache_file.name}.dead.tmp"
    live = cache / f".{cache_file.name}.busy.tmp"
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    write_image(root / "train" / "cat" / "100.png", np.random.default_rng(3))
    load_dataset("imagefolder", root, cache_dir=cache)  # rebuilds, so writes
    assert not stale.exists()
    assert live.exists()  # may belong to a writer still running


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "tree", per_class={"train": 9, "test": 3})
    serial = load_dataset("imagefolder", root, cache_dir=tmp_path / "serial")
    monkeypatch.setattr(decode, "_decode_workers", lambda n: 2)
    parallel = load_dataset("imagefolder", root, cache_dir=tmp_path / "parallel")
    assert_same_content(serial, parallel)
    # An error in a worker process reaches the caller as the same DataError.
    bad = root / "train" / "frog" / "004.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root, cache_dir=tmp_path / "parallel")
    assert_one_line(info.value, "cannot decode", str(bad))


def test_root_and_cache_dir_from_arguments_then_environment(tmp_path, monkeypatch):
    env_root = make_tree(tmp_path / "env-tree")
    monkeypatch.setenv("NAS_DATA", str(env_root))
    monkeypatch.setenv("NAS_CACHE", str(tmp_path / "env-cache"))
    data = load_dataset("imagefolder")
    assert data.source == str(env_root)
    assert Path(data.cache_file).parent == tmp_path / "env-cache"
    arg_root = make_tree(tmp_path / "arg-tree", classes=("ant", "bee"))
    data = load_dataset("imagefolder", arg_root, cache_dir=tmp_path / "arg-cache")
    assert data.classes == ["ant", "bee"]
    assert Path(data.cache_file).parent == tmp_path / "arg-cache"


def test_default_root_and_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("NAS_DATA", raising=False)
    monkeypatch.delenv("NAS_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    make_tree(tmp_path / "work" / "data" / "imagefolder")
    monkeypatch.chdir(tmp_path / "work")
    data = load_dataset("imagefolder")
    assert data.source == str(tmp_path / "work" / "data" / "imagefolder")
    assert Path(data.cache_file).parent == tmp_path / "home" / ".cache" / "nas"


def test_cifar10_named_tree_must_have_cifar10_classes(tmp_path):
    good = make_tree(tmp_path / "good", per_class={"train": 1, "test": 1}, classes=CIFAR10_CLASSES)
    data = load_dataset("cifar10", good, cache_dir=tmp_path / "cache")
    assert data.name == "cifar10"
    assert data.classes == list(CIFAR10_CLASSES)
    assert data.train_labels.tolist() == list(range(10))

    renamed = [("kitty" if c == "cat" else c) for c in CIFAR10_CLASSES]
    bad = make_tree(tmp_path / "bad", per_class={"train": 1, "test": 1}, classes=renamed)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", bad, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, str(bad / "train"), "cifar10", "missing cat", "unexpected kitty")


# --------------------------------------------------------------------------
# ImageFolder errors


def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", missing, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, str(missing), "does not exist", "--data", "NAS_DATA", "train/", "test/")


def test_folder_without_train_and_test(tmp_path):
    flat = tmp_path / "flat"
    write_image(flat / "cat" / "0.png", np.random.default_rng(0))
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", flat, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, str(flat), "no train/ and no test/", "--data", "NAS_DATA")
    (flat / "train").mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", flat, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, str(flat), "no test/ subfolder")


def test_mixed_image_sizes_name_the_file(tmp_path):
    root = make_tree(tmp_path / "tree")
    odd = root / "train" / "dog" / "002.png"
    write_image(odd, np.random.default_rng(0), size=(9, 6))
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, str(odd), "9x6", "8x6")


def test_test_images_must_have_the_training_size(tmp_path):
    root = make_tree(tmp_path / "tree")
    odd = root / "test" / "cat" / "000.png"
    write_image(odd, np.random.default_rng(0), size=(6, 8))
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, str(odd), "6x8", "the training images")


@pytest.mark.parametrize("content, words", [(b"this is not an image", "cannot decode"), (b"", "empty")])
def test_undecodable_file_is_named(tmp_path, content, words):
    root = make_tree(tmp_path / "tree")
    bad = root / "train" / "frog" / "002.png"
    bad.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, str(bad), words)


def test_class_folder_without_images(tmp_path):
    root = make_tree(tmp_path / "tree")
    (root / "train" / "zebra").mkdir()
    (root / "train" / "zebra" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, str(root / "train" / "zebra"), "no images")


def test_test_classes_must_match_train_classes(tmp_path):
    root = make_tree(tmp_path / "tree")
    for f in (root / "test" / "frog").iterdir():
        f.unlink()
    (root / "test" / "frog").rmdir()
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, str(root / "test"), "missing frog")


def test_other_formats_and_modes_become_rgb(tmp_path):
    root = make_tree(tmp_path / "tree", per_class={"train": 1, "test": 1})
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (6, 8), dtype=np.uint16)
    Image.fromarray(pixels).save(root / "train" / "cat" / "bmp.bmp")  # torchvision cannot: Pillow does
    Image.fromarray(deep).save(root / "train" / "cat" / "deep.png")  # 16-bit grey
    Image.fromarray(pixels[..., 0]).save(root / "train" / "dog" / "gray.png")
    Image.fromarray(pixels).convert("RGBA").save(root / "train" / "frog" / "alpha.png")
    hidden = root / "train" / "frog" / "._alpha.png"  # macOS resource fork: skipped
    hidden.write_bytes(b"\x00\x05\x16\x07")
    data = load_dataset("imagefolder", root, cache_dir=tmp_path / "cache")
    # Each class: 000.png first, then the files added here in name order.
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    chw = pixels.transpose(2, 0, 1)
    np.testing.assert_array_equal(data.train_images[1].numpy(), chw)
    high_byte = (deep >> 8).astype(np.uint8)
    np.testing.assert_array_equal(data.train_images[2].numpy(), np.stack([high_byte] * 3))
    np.testing.assert_array_equal(data.train_images[4].numpy(), np.repeat(chw[:1], 3, axis=0))
    np.testing.assert_array_equal(data.train_images[6].numpy(), chw)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, "mnist", "cifar10, cifar100, imagefolder")


# --------------------------------------------------------------------------
# torchvision CIFAR archives


def test_torchvision_layout_is_spelled_out_correctly():
    from torchvision import datasets

    for name, cls in (("cifar10", datasets.CIFAR10), ("cifar100", datasets.CIFAR100)):
        folder, files = data_mod._TORCHVISION_FILES[name]
        assert folder == cls.base_folder
        assert list(files) == [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def test_official_class_lists_are_in_label_order():
    # Both datasets number their classes alphabetically, which is also the
    # order ImageFolder gives their class folders.
    assert len(set(decode.CIFAR100_CLASSES)) == 100
    assert list(decode.CIFAR100_CLASSES) == sorted(decode.CIFAR100_CLASSES)
    assert list(CIFAR10_CLASSES) == sorted(CIFAR10_CLASSES) and len(CIFAR10_CLASSES) == 10


def test_cifar10_download_failure_says_what_to_do(tmp_path, monkeypatch):
    from torchvision import datasets

    def offline(self):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets.CIFAR10, "download", offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", empty, cache_dir=tmp_path / "cache")
    assert_one_line(info.value, str(empty), "cifar-10-batches-py", "could not be downloaded",
                    "name resolution", "--data", "NAS_DATA", "train/")


def test_cifar100_without_download(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cifar100", tmp_path, cache_dir=tmp_path / "cache", download=False)
    assert_one_line(info.value, str(tmp_path), "cifar-100-python", "download is off", "--data", "NAS_DATA")


def write_fake_cifar10(root: Path, seed: int, per_batch=3) -> dict:
    """Batch files in torchvision's CIFAR-10 layout, with random images."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in data_mod._TORCHVISION_FILES["cifar10"][1][:-1]:
        batches[name] = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, per_batch).tolist(),
        }
        with open(base / name, "wb") as f:
            pickle.dump(batches[name], f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)
    return batches


def test_torchvision_cifar10_is_loaded_and_cached(tmp_path, monkeypatch):
    from torchvision import datasets
    from torchvision.datasets import cifar

    # Its md5 checks know only the real files.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    root, cache = tmp_path / "cifar", tmp_path / "cache"
    batches = write_fake_cifar10(root, seed=0)
    data = load_dataset("cifar10", root, cache_dir=cache, download=False)
    assert not data.cached
    assert data.source == str(root / "cifar-10-batches-py")
    assert data.classes == list(CIFAR10_CLASSES)
    assert data.train_images.shape == (15, 3, 32, 32) and data.train_images.is_contiguous()
    assert data.test_images.shape == (3, 3, 32, 32)
    first_of_batch_2 = batches["data_batch_2"]["data"][0].reshape(3, 32, 32)
    np.testing.assert_array_equal(data.train_images[3].numpy(), first_of_batch_2)
    train_labels = sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    assert data.train_labels.tolist() == train_labels
    assert data.test_labels.tolist() == batches["test_batch"]["labels"]

    with monkeypatch.context() as m:
        m.setattr(datasets.CIFAR10, "__init__", refuse)
        again = load_dataset("cifar10", root, cache_dir=cache, download=False)
    assert again.cached
    assert_same_content(data, again)

    write_fake_cifar10(root, seed=1)
    for f in (root / "cifar-10-batches-py").iterdir():
        touch_later(f)
    changed = load_dataset("cifar10", root, cache_dir=cache, download=False)
    assert not changed.cached
    assert changed.fingerprint != data.fingerprint


# --------------------------------------------------------------------------
# the offline CIFAR-10 copy (decoded once per session)


@pytest.fixture(scope="module")
def cifar10(cifar10_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cifar10-cache")
    return load_dataset("cifar10", cifar10_root, cache_dir=cache), cache


def test_offline_cifar10(cifar10):
    data, _ = cifar10
    assert data.classes == list(CIFAR10_CLASSES)
    assert data.train_images.shape == (50_000, 3, 32, 32)
    assert data.test_images.shape == (10_000, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.train_images.is_contiguous()
    assert torch.bincount(data.train_labels).tolist() == [5000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    # The copy every test, benchmark and CI run reads is the lossless one:
    # per-channel mean and std of all 50,000 training images, through the
    # project's own loader, are the published CIFAR-10 figures to 4 decimals
    # (the JPEG copy misses them: its std is 0.2452, 0.2428, 0.2606).
    mean, std = channel_stats(data.train_images)
    for got, published in zip(mean + std, (0.49140, 0.48216, 0.44653, 0.24703, 0.24349, 0.26159)):
        assert abs(got - published) < 5e-5, (mean, std)
    splits = make_splits(data.train_labels, DEFAULT_VAL_SIZE)
    assert torch.bincount(data.train_labels[splits.val]).tolist() == [500] * 10


def test_offline_cifar10_reloads_from_cache(cifar10, cifar10_root, monkeypatch):
    data, cache = cifar10
    monkeypatch.setattr(decode, "_decode_file", refuse)
    again = load_dataset("cifar10", cifar10_root, cache_dir=cache)
    assert again.cached
    assert_same_content(data, again)


# --------------------------------------------------------------------------
# command line


def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("NAS_DATA", "NAS_CACHE")}
    return subprocess.run(
        [sys.executable, "-m", "nas.training.datasets", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def test_cli_prints_the_splits(tmp_path):
    root = make_tree(tmp_path / "tree", per_class={"train": 6, "test": 2})
    result = run_cli("--dataset", "imagefolder", "--data", root, "--val-size", 3, "--subset", 9,
                     "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "train 9 / val 3 / test 6" in out
    assert re.search(r"^\s+cat\s+3\s+1\s+2$", out, re.MULTILINE), out
    assert "3 x 6 x 8" in out
    assert re.search(r"^fingerprint: [0-9a-f]{64}$", out, re.MULTILINE), out
    assert "cache miss" in out


def test_cli_error_is_one_line_with_exit_code_2(tmp_path):
    missing = tmp_path / "missing"
    result = run_cli("--dataset", "imagefolder", "--data", missing, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(missing) in lines[0]


def test_cli_in_process_reports_cache_hit_and_bad_sizes(tmp_path, capsys):
    root = make_tree(tmp_path / "tree", per_class={"train": 6, "test": 2})
    args = ["--dataset", "imagefolder", "--data", str(root), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    assert "cache miss" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cache hit" in out
    assert "train 17 / val 1 / test 6" in out  # default: a tenth of 18 images
    assert main([*args, "--val-size", "18"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: val_size must be an integer from 1 to 17") and err.count("\n") == 1
