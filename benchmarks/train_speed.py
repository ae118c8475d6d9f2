"""Training throughput: this project's trainer against a naive PyTorch recipe.

Same model (resnet20 with SE in every block, ``nas.paper_config``), same
batch size, same number of timed steps, same SGD settings, one run, side by
side:

(a) ``nas.training.train.train``: uint8 images in memory, crop and flip batched on
    tensors, channels_last, bf16 autocast where the CPU has bf16 units;
(b) the usual recipe: fp32, NCHW, a torchvision ``DataLoader`` with
    ``num_workers=2`` over the same images as PIL images, with
    ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor`` and
    ``Normalize``.

The first ``--warmup`` steps of each (allocator, oneDNN kernel selection,
worker start-up) are not timed. Prints images/s of both, the ratio, and the
achieved training GFLOP/s (3 x forward MACs x 2 FLOPs per image) against this
machine's matmul peak in the dtype each one used, measured here too.

(a') the same trainer with its whole step compiled
    (``nas.training.compiled_step``: forward, loss and backward as one
    inductor graph), as a run long enough to repay the compile takes it; the
    compile (and the check against the eager step) happens in the untimed
    warm-up and is printed apart, with the steps it takes to repay.

(c) is a ceiling, not a trainer: the model's convolutions alone, forward and
backward, each timed on its own with random inputs of its real shape, in the
dtype and layout of (a). No trainer built on PyTorch's convolution kernels
can go faster than (c), whatever it does about batch norm, activations,
attention, the optimiser and the data, so (c) bounds both targets.

    python benchmarks/train_speed.py [--data DIR] [--steps 60] [--batch-size 256] [--profile]

``--profile`` also prints where (a)'s time goes, operator by operator
(``torch.profiler``, self time, over all of (a)'s steps).
"""
from __future__ import annotations

import contextlib
import io
import os
import platform
import re
import time
from unittest import mock

import _cifar
import numpy as np
import torch
from torch import nn

import nas
from nas.device import resolve_runtime
from nas.training import compiled_step
from nas.training.splits import channel_stats
from nas.training.train import Recipe, train


def matmul_peak(dtype: torch.dtype, sizes=(1024, 2048, 3072), repeats: int = 10) -> float:
    """Best GFLOP/s of square matmuls in ``dtype`` over a few sizes."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(3):
            a @ b
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


class _StepClock:
    """Progress callback of ``nas.training.train.train``: wall time from step
    ``warmup`` to the last step (called every 10 steps)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def __call__(self, step: int, total: int, loss: float) -> None:
        if step == self.warmup:
            self.start = time.perf_counter()
        if step == total:
            self.end, self.steps = time.perf_counter(), total - self.warmup


def run_ours(cfg, images, labels, mean, std, batch_size: int, warmup: int, steps: int,
             compiled: bool = False, precision: str = "auto") -> tuple[float, str, str]:
    """(images/s, precision, the compiled step's report line or "")."""
    n = (warmup + steps) * batch_size
    model = nas.build_model(cfg)
    clock = _StepClock(warmup)
    recipe = Recipe(epochs=1, batch_size=batch_size, lr=0.1, warmup_epochs=0.1, seed=0)
    out = io.StringIO()
    # the run is as long as the benchmark makes it; (a') takes the compiled step as a long run would
    with mock.patch.object(compiled_step, "MIN_STEPS", 1 if compiled else 10 ** 9), contextlib.redirect_stdout(out):
        result = train(model, images[:n], labels[:n], images[:500], labels[:500], mean, std, recipe,
                       resolve_runtime(precision=precision), progress=clock)
    line = next((x for x in out.getvalue().splitlines() if x.startswith("compiled step: ")), "")
    return clock.steps * batch_size / (clock.end - clock.start), result.precision, line


class _PILImages(torch.utils.data.Dataset):
    """The uint8 tensors as torchvision's CIFAR10 serves them: one HWC numpy
    array per image, turned into a PIL image and transformed per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def run_naive(cfg, images, labels, mean, std, batch_size: int, warmup: int, steps: int) -> float:
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    n = (warmup + steps) * batch_size
    loader = torch.utils.data.DataLoader(_PILImages(images[:n], labels[:n], transform), batch_size=batch_size,
                                         shuffle=True, num_workers=2, drop_last=True)
    torch.manual_seed(0)
    model = nas.build_model(cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    start = None
    for step, (x, y) in enumerate(loader):
        if step == warmup:
            start = time.perf_counter()
        loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - start)


def conv_ceiling(model: nn.Module, batch_size: int, dtype: torch.dtype | None, repeats: int = 20) -> float:
    """Images/s if a training step were nothing but the model's convolutions
    (forward + backward for input and weight), each timed alone on random
    data of the shape it sees in the model, channels_last, in ``dtype``."""
    shapes: list[tuple[nn.Conv2d, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, inp, out: shapes.append((m, tuple(inp[0].shape[1:]))))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    dtype = dtype or torch.float32
    seconds = 0.0
    for index, (conv, shape) in enumerate(shapes):
        layer = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          groups=conv.groups, bias=conv.bias is not None)
        layer = layer.to(dtype=dtype, memory_format=torch.channels_last)
        x = torch.randn(batch_size, *shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(index > 0)  # the stem's input is the image: no gradient wanted there
        grad = torch.randn_like(layer(x))
        for _ in range(3):
            layer(x).backward(grad)
        start = time.perf_counter()
        for _ in range(repeats):
            layer(x).backward(grad)
        seconds += (time.perf_counter() - start) / repeats
    return batch_size / seconds


def main() -> None:
    parser = _cifar.parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each (a multiple of 10)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed first steps (a multiple of 10)")
    parser.add_argument("--profile", action="store_true", help="print (a)'s time per operator")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="(a)'s precision (default: the trainer's choice for this CPU); with "
                             "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 and fp32, an AVX2 CPU's kernels")
    args = parser.parse_args()
    if args.steps % 10 or args.warmup % 10 or args.warmup < 10:
        parser.error("--steps and --warmup must be multiples of 10 (the trainer reports every 10 steps)")

    data, splits, threads = _cifar.heldout_split(args.data)
    images, labels = data.train_images[splits.train], data.train_labels[splits.train]
    mean, std = channel_stats(images)
    cfg = nas.paper_config("resnet20", "se")
    macs = nas.profile(nas.build_model(cfg), 32)["macs"]
    flops_per_image = 3 * macs * 2

    ours, precision, _ = run_ours(cfg, images, labels, mean, std, args.batch_size, args.warmup, args.steps,
                                  precision=args.precision)
    fused, _, compile_line = run_ours(cfg, images, labels, mean, std, args.batch_size, args.warmup, args.steps,
                                      compiled=True, precision=args.precision)
    if args.profile:  # a second run of (a) under the profiler, so the timed run above stays unperturbed
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run_ours(cfg, images, labels, mean, std, args.batch_size, args.warmup, args.steps, precision=args.precision)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    naive = run_naive(cfg, images, labels, mean, std, args.batch_size, args.warmup, args.steps)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    ceiling = conv_ceiling(nas.build_model(cfg), args.batch_size, amp)
    peak = {"fp32": matmul_peak(torch.float32)}
    if precision != "fp32":
        peak[precision] = matmul_peak(amp)

    isa = " ".join(f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ)
    print(f"# {_cifar.cpu_model()} ({_cifar.cpu_bf16_flags()}{'; kernels limited: ' + isa if isa else ''}; "
          f"the trainer ran {precision}), "
          f"resnet20 + SE ({macs / 1e6:.2f} M MACs/image), batch {args.batch_size}, {args.steps} timed steps "
          f"after {args.warmup} warm-up steps; torch {torch.__version__}, {threads} threads, "
          f"{platform.machine()}, numpy {np.__version__}")
    print("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    rows = [("(a) nas.training.train", ours, precision), ("(a') compiled step", fused, precision),
            ("(b) naive DataLoader+PIL", naive, "fp32"),
            ("(c) convolutions alone", ceiling, precision)]
    for name, ips, prec in rows:
        gflops = ips * flops_per_image / 1e9
        print(f"{name:<26} {ips:8.0f} images/s  {prec:>4}  {gflops:6.0f} GFLOP/s = "
              f"{gflops / peak[prec]:5.1%} of the {prec} matmul peak")
    print(f"ratio (a)/(b): {ours / naive:.2f}x; (a')/(b): {fused / naive:.2f}x; (a')/(a): {fused / ours:.2f}x")
    print(f"(a') {compile_line or 'no compiled-step line: the trainer did not measure it'}")
    match = re.search(r"compiled step: (\d+) s to compile", compile_line)
    if match and fused > ours:
        saved = args.batch_size / ours - args.batch_size / fused  # seconds per step
        print(f"(a') repays its compile after {int(match.group(1)) / saved:.0f} steps of batch {args.batch_size} "
              f"({saved * 1e3:.1f} ms saved per step)")
    if ceiling >= ours:
        print(f"ceiling (c)/(b): {ceiling / naive:.2f}x; (a) spends {1 - ours / ceiling:.0%} of its step time "
              f"outside the convolutions")
    else:  # timed one by one, the convs ran slower than inside the whole step: (c) bounds nothing here
        print(f"ceiling: not measurable on this machine: the convolutions timed alone ({ceiling:.0f} images/s) "
              f"ran slower than the whole step of (a) ({ours:.0f} images/s)")


if __name__ == "__main__":
    main()
