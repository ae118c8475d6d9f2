"""The CUDA path (issue 35 item 3): device auto-detection, mixed precision,
data kept on the device as uint8, every attention module trained a step,
checkpoints that load on the CPU. Marked ``cuda`` and skipped where no GPU
is (CI); ``benchmarks/gpu_check.py`` runs them on a GPU machine
(``python -m pytest -m cuda tests/test_cuda.py``)."""
from __future__ import annotations

import math

import pytest
import torch

import nas
from nas.attention import attention_names
from nas.device import resolve_runtime
from nas.kernels.choice import run_fastest
from nas.training.train import Recipe, TensorBatches, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


def test_auto_picks_the_gpu_and_a_supported_half_precision():
    runtime = resolve_runtime()
    assert runtime.device.type == "cuda"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert runtime.amp_dtype is expected and runtime.needs_grad_scaler == (expected is torch.float16)


def test_batches_are_gathered_on_the_device_from_uint8():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(64) % 10
    data = TensorBatches(images, labels, (0.5,) * 3, (0.25,) * 3, 4, torch.device("cuda"))
    x, y = data.batch(torch.arange(16, device="cuda"), torch.Generator().manual_seed(0))
    assert x.device.type == "cuda" and y.device.type == "cuda" and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (16, 3, 32, 32)


@pytest.mark.parametrize("kind", sorted(t for t in attention_names() if t != "none"))
def test_every_attention_module_trains_a_step_in_mixed_precision(kind):
    cfg = nas.paper_config("resnet20", kind)  # placed and set as its paper does
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(64) % 10
    runtime = resolve_runtime("cuda")
    result = train(nas.build_model(cfg), images, labels, images[:32], labels[:32], (0.5,) * 3, (0.25,) * 3,
                   Recipe(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0.5, seed=0), runtime)
    assert math.isfinite(result.val_accuracy) and result.precision == runtime.precision


def test_tuned_ops_run_their_plain_formulation_on_cuda():
    x = torch.randn(4, 8, device="cuda")
    calls = []

    def plain(t):
        calls.append("plain")
        return t * 2

    def other(t):
        calls.append("other")
        return t + t

    assert torch.equal(run_fastest("double", {"plain": plain, "other": other}, (x,)), x * 2)
    assert calls == ["plain"]  # cuDNN tunes itself; nothing is timed here


def test_a_checkpoint_trained_on_the_gpu_loads_on_the_cpu(tmp_path):
    from nas.model.checkpoint import load_checkpoint, save_checkpoint

    cfg = nas.preset_config("resnet20", width_multiplier=0.25)
    model = nas.build_model(cfg).cuda().eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, cfg, (0.5,) * 3, (0.25,) * 3)
    loaded, _ = load_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(x), model(x.cuda()).cpu(), atol=1e-4)
