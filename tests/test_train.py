"""The proxy trainer and ``search.py train``."""
import subprocess
import sys

import pytest
import torch
import yaml

import nas
from nas.device import resolve_runtime
from nas.training.datasets import load_dataset
from nas.training.splits import make_splits
from nas.training.train import (
    DivergedError,
    Recipe,
    TensorBatches,
    _param_groups,
    evaluate,
    train,
)

FP32 = resolve_runtime("cpu", "fp32")


def tiny_config(num_classes=10):
    """resnet20's layout with one block per stage at half width: seconds to train."""
    cfg = nas.preset_config("resnet20", num_classes=num_classes, width_multiplier=0.5)
    for stage in cfg.stages:
        stage.blocks = stage.blocks[:1]
    cfg.backbone = "tiny"
    return cfg


@pytest.fixture(scope="module")
def cifar(cifar10_root):
    data = load_dataset("cifar10", cifar10_root)
    splits = make_splits(data.train_labels, 1000, seed=0, subset=3000)
    return data, splits


# ---- augmentation
def _distinct_image(n=1):
    return (torch.arange(n * 3 * 8 * 8) % 251).to(torch.uint8).view(n, 3, 8, 8)


def test_batch_without_augmentation_is_the_normalised_image():
    images = _distinct_image(2)
    tb = TensorBatches(images, torch.tensor([0, 1]), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 2, torch.device("cpu"))
    x, y = tb.batch(torch.tensor([1, 0]), None, augment=False)
    expected = nas.training.train.normalise(images[[1, 0]], (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    torch.testing.assert_close(x, expected)
    assert y.tolist() == [1, 0]
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_crops_and_flips_are_per_sample():
    image = _distinct_image()
    pad = 2
    tb = TensorBatches(image, torch.tensor([0]), (0.0,) * 3, (1 / 255,) * 3, pad, torch.device("cpu"))
    x, _ = tb.batch(torch.zeros(64, dtype=torch.long), torch.Generator().manual_seed(0))
    assert x.shape == (64, 3, 8, 8)
    padded = torch.nn.functional.pad(image.float(), (pad,) * 4, mode="reflect")[0]
    candidates = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + 8, dx:dx + 8]
            candidates[(dy, dx, False)] = crop
            candidates[(dy, dx, True)] = crop.flip(2)
    seen = []
    for sample in x:
        matches = [k for k, c in candidates.items() if torch.equal(c, sample)]
        assert len(matches) == 1, "every sample is exactly one crop of the padded image, flipped or not"
        seen.append(matches[0])
    assert len({(dy, dx) for dy, dx, _ in seen}) > 10  # crops differ per sample
    flips = [f for *_, f in seen]
    assert 16 < sum(flips) < 48  # about half flipped, per sample


# ---- optimiser
def test_no_weight_decay_on_norms_and_biases():
    model = nas.build_model(tiny_config())
    decay, no_decay = _param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    ids = {id(p) for p in no_decay["params"]}
    assert id(model.bn1.weight) in ids and id(model.fc.bias) in ids
    assert id(model.fc.weight) not in ids and id(model.conv1.weight) not in ids


# ---- training
def _run(cifar, **recipe):
    data, splits = cifar
    torch.manual_seed(0)
    model = nas.build_model(tiny_config())
    tr, va = splits.train, splits.val
    result = train(model, data.train_images[tr], data.train_labels[tr], data.train_images[va],
                   data.train_labels[va], (0.49, 0.48, 0.45), (0.25, 0.24, 0.26),
                   Recipe(**{"epochs": 2, "batch_size": 100, "lr": 0.2, **recipe}), FP32)
    return model, result


def test_short_run_beats_chance_and_is_reproducible(cifar):
    model_a, a = _run(cifar)
    model_b, b = _run(cifar)
    assert a.val_accuracy > 0.25, a  # chance is 0.10 on 1,000 stratified images
    assert a.val_accuracy == b.val_accuracy
    for (name, pa), pb in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert a.images_seen == 2 * 30 * 100 and a.precision == "fp32"
    _, c = _run(cifar, seed=1)
    assert c.val_accuracy != a.val_accuracy  # the seed matters


def test_budget_in_images_replaces_epochs(cifar):
    _, result = _run(cifar, images=1500, rungs=(0.2,))
    assert result.images_seen == 1500  # 15 steps of 100 on 3,000 images: half an epoch
    assert [e for e, _ in result.rung_accuracies] == [0.2, 0.5]


def test_divergence_raises_with_the_step(cifar):
    with pytest.raises(DivergedError, match=r"loss became (nan|inf) at step \d+ of 60"):
        _run(cifar, lr=1e8, warmup_epochs=0)


def test_callback_sees_every_rung_and_can_stop(cifar):
    data, splits = cifar
    seen = []

    def stop_after_first(rung, epochs, acc):
        seen.append((rung, epochs, acc))
        return True

    model = nas.build_model(tiny_config())
    tr, va = splits.train, splits.val
    result = train(model, data.train_images[tr], data.train_labels[tr], data.train_images[va],
                   data.train_labels[va], (0.5,) * 3, (0.25,) * 3,
                   Recipe(epochs=3, rungs=(1, 2), batch_size=100), FP32, callback=stop_after_first)
    assert result.stopped_early and len(seen) == 1 and seen[0][:2] == (0, 1.0)
    assert result.rung_accuracies == [(1.0, seen[0][2])] and result.images_seen == 3000

    seen.clear()
    result = train(model, data.train_images[tr], data.train_labels[tr], data.train_images[va],
                   data.train_labels[va], (0.5,) * 3, (0.25,) * 3,
                   Recipe(epochs=3, rungs=(1, 2), batch_size=100), FP32,
                   callback=lambda *a: seen.append(a) and False)
    assert not result.stopped_early and [s[:2] for s in seen] == [(0, 1.0), (1, 2.0), (2, 3.0)]


class _Killed(Exception):
    pass


def test_killed_run_resumes_from_its_state_file_exactly(cifar, tmp_path):
    """A run interrupted in its third epoch and started again (fresh model,
    other global seed) ends with the same weights and accuracies as a run
    that was never interrupted: same batches, augmentation and optimiser
    state from the last epoch boundary on."""
    data, splits = cifar
    tr, va = splits.train, splits.val
    args = (data.train_images[tr], data.train_labels[tr], data.train_images[va], data.train_labels[va],
            (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), Recipe(epochs=3, rungs=(1.5,), batch_size=100, lr=0.2))
    torch.manual_seed(0)
    whole = nas.build_model(tiny_config())
    expected = train(whole, *args, FP32)

    state = tmp_path / "run.state.pt"

    def kill_in_epoch_three(step, total, loss):
        if step >= 70:  # 30 steps an epoch: the state of the epoch-3 boundary (step 60) is on disk
            raise _Killed

    torch.manual_seed(0)
    with pytest.raises(_Killed):
        train(nas.build_model(tiny_config()), *args, FP32, progress=kill_in_epoch_three, state_path=state,
              state_key="k", state_interval=0)
    assert state.exists()
    torch.manual_seed(123)  # the state, not the initialisation, decides what comes next
    resumed_model = nas.build_model(tiny_config())
    resumed = train(resumed_model, *args, FP32, state_path=state, state_key="k", state_interval=0)
    assert resumed.resumed_from_step == 60
    # the rung in the middle of epoch 2 was measured before the kill and kept
    assert resumed.rung_accuracies == expected.rung_accuracies and len(expected.rung_accuracies) == 2
    # the clocks include the time before the kill: the saved 60 steps plus the 30 after it
    saved = torch.load(state, weights_only=True)
    assert resumed.wall_seconds > saved["wall_seconds"] > 0
    assert resumed.train_seconds > saved["train_seconds"] > 0
    for (name, a), b in zip(whole.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name

    # a state written for another run (other key) is not used
    torch.manual_seed(0)
    other = train(nas.build_model(tiny_config()), *args, FP32, state_path=state, state_key="other",
                  state_interval=0)
    assert other.resumed_from_step == 0


# ---- the train command
def test_train_command_checkpoint_reloads_with_same_predictions(tmp_path, cifar10_root):
    cfg_path = tmp_path / "tiny.yaml"
    tiny_config().save(cfg_path)
    cmd = [sys.executable, "search.py", "train", str(cfg_path), "--epochs", "1", "--subset", "600",
           "--val-size", "500", "--batch-size", "100", "--weight-decay", "1e-4", "--precision", "fp32",
           "--data", str(cifar10_root)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout
    results = yaml.safe_load((tmp_path / "tiny.results.yaml").read_text())
    assert results["train_images"] == 600 and results["val_images"] == 500
    assert results["structure_hash"] == tiny_config().structure_hash()
    assert results["recipe"]["weight_decay"] == 1e-4 and results["recipe"]["batch_size"] == 100

    payload = torch.load(tmp_path / "tiny.pt", weights_only=True)
    model = nas.build_model(nas.load_config(cfg_path))
    model.load_state_dict(payload["state_dict"])
    data = load_dataset("cifar10", cifar10_root)
    acc = evaluate(model, data.test_images, data.test_labels, payload["mean"], payload["std"], FP32)
    assert acc == results["test_accuracy"]


def test_train_command_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("block: basic\nstem: cifar\nstem_width: 8\nstages: []\n")
    out = subprocess.run([sys.executable, "search.py", "train", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: {bad}: stages: expected a non-empty list of stages"]
    out = subprocess.run([sys.executable, "search.py", "train", str(tmp_path / "none.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "config file not found" in out.stderr and "Traceback" not in out.stderr


def test_format_1_checkpoints_load_with_cbam_converted_and_psa_refused(tmp_path):
    from nas.model.checkpoint import load_checkpoint, save_checkpoint

    cfg = nas.paper_config("resnet20", "cbam", r=4)
    torch.manual_seed(0)
    model = nas.build_model(cfg).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nas.attention.CBAM):
                m.spatial.weight.normal_()  # the two input maps get different weights
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / "cbam.pt"
    save_checkpoint(path, model, cfg, (0.5,) * 3, (0.25,) * 3)
    payload = torch.load(path, weights_only=True)
    # what the earlier version saved: format 1, the spatial conv's maps in [mean, max] order
    payload["format"] = 1
    payload["state_dict"] = {k: (v.flip(1) if k.endswith("spatial.weight") else v)
                             for k, v in payload["state_dict"].items()}
    torch.save(payload, path)
    loaded, _ = load_checkpoint(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), expected)

    psa_cfg = nas.paper_config("resnet20", "psa")
    psa_path = tmp_path / "psa.pt"
    save_checkpoint(psa_path, nas.build_model(psa_cfg), psa_cfg, (0.5,) * 3, (0.25,) * 3)
    payload = torch.load(psa_path, weights_only=True)
    payload["format"] = 1
    torch.save(payload, psa_path)
    with pytest.raises(nas.NasError, match=r"psa\.pt was saved by an earlier version whose psa module"):
        load_checkpoint(psa_path)

    danet_cfg = nas.paper_config("resnet20", "danet")
    danet_path = tmp_path / "danet.pt"
    save_checkpoint(danet_path, nas.build_model(danet_cfg), danet_cfg, (0.5,) * 3, (0.25,) * 3)
    payload = torch.load(danet_path, weights_only=True)
    load_checkpoint(danet_path)  # format 2 loads
    payload["format"] = 1
    torch.save(payload, danet_path)
    with pytest.raises(nas.NasError, match=r"danet\.pt was saved by an earlier version whose danet module"):
        load_checkpoint(danet_path)


def test_train_on_every_training_image_with_val_size_0(tmp_path, cifar10_root):
    """He et al.'s protocol for their CIFAR-10 test figures: train on all the
    training images, hold none out; validation is then reported as absent."""
    from nas.workflows.retrain import train_config

    cfg_path = tmp_path / "tiny.yaml"
    tiny_config().save(cfg_path)
    result = train_config(cfg_path, epochs=1, batch_size=100, subset=500, val_size=0, data=str(cifar10_root),
                          precision="fp32")
    assert result["val_images"] == 0 and result["train_images"] == 500
    assert result["val_accuracy"] is None and result["rung_accuracies"] == [[1.0, None]]
    assert 0 < result["test_accuracy"] <= 1
    saved = yaml.safe_load((tmp_path / "tiny.results.yaml").read_text())
    assert saved["val_accuracy"] is None and saved["val_images"] == 0
    with pytest.raises(nas.NasError, match=r"val_size must be an integer from 0 to 49999 .* got -1"):
        train_config(cfg_path, epochs=1, val_size=-1, data=str(cifar10_root))
