"""Probe, not part of the tool: the direct grouped-conv kernel of
`direct_conv.py` against the conv (relative errors, fp32) and against what
`nas.kernels.choice.run_fastest` chooses today (bf16 input under autocast, forward +
backward, batch 128, channels_last), at PSA's and SK's resnet20 shapes; then
the kernel's three passes alone. docs/measurements/attention-speed.md, "PSA, measured again".

    python benchmarks/probes/direct_conv_probe.py
"""
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # direct_conv.py, benchmarks/_cifar.py

import _cifar  # noqa: E402
from direct_conv import _load, direct_conv  # noqa: E402

from nas.device import configure_threads  # noqa: E402
from nas.kernels.conv import conv2d  # noqa: E402

configure_threads()
print(f"# {_cifar.cpu_model()} ({_cifar.cpu_bf16_flags()}), {torch.get_num_threads()} threads, torch {torch.__version__}")


def bench(f, reps=5):
    for _ in range(2):
        f()
    start = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - start) / reps * 1000


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


# (inputs, outputs, size, kernel, groups, dilation): PSA's 5x5-9x9 parts of
# the three stages, then SK's grouped dilated 3x3 branches
CASES = [(16, 4, 32, 5, 4, 1), (16, 4, 32, 7, 4, 1), (16, 4, 32, 9, 4, 1), (32, 8, 16, 5, 4, 1),
         (32, 8, 16, 7, 8, 1), (32, 8, 16, 9, 8, 1), (64, 16, 8, 5, 4, 1), (64, 16, 8, 7, 8, 1),
         (64, 16, 8, 9, 16, 1), (16, 16, 32, 3, 16, 2), (16, 16, 32, 3, 4, 2), (32, 32, 16, 3, 4, 3),
         (64, 64, 8, 3, 16, 2)]

print("\n## right: relative error against F.conv2d in fp32 (6 images, maps one column wider than tall)")
torch.manual_seed(0)
for cin, cout, size, k, groups, dilation in CASES:
    x = torch.randn(6, cin, size, size + 1).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(cout, cin // groups, k, k, requires_grad=True)
    want = F.conv2d(x, w, None, 1, dilation * (k - 1) // 2, dilation, groups)
    grad = torch.randn_like(want)
    want_x, want_w = torch.autograd.grad(want, (x, w), grad)
    got = direct_conv(x, w, dilation, groups)
    got_x, got_w = torch.autograd.grad(got, (x, w), grad)
    print(f"{cin:3d} -> {cout:3d} @ {size:2d}, {k}x{k}, groups {groups:2d}, dilation {dilation}: output "
          f"{relative(got, want):.1e}, input gradient {relative(got_x, want_x):.1e}, weight gradient "
          f"{relative(got_w, want_w):.1e}")

print("\n## fast: ms forward + backward, batch 128, bf16 input (the chosen formulation under bf16 autocast)")
for cin, cout, size, k, groups, dilation in CASES:
    conv = torch.nn.Conv2d(cin, cout, k, padding=dilation * (k - 1) // 2, dilation=dilation, groups=groups,
                           bias=False)
    x = torch.randn(128, cin, size, size).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(128, cout, size, size).bfloat16().contiguous(memory_format=torch.channels_last)

    def chosen():
        with torch.autocast("cpu", torch.bfloat16):
            y = conv2d(x, conv)
        y.backward(grad.to(y.dtype))

    def direct():
        direct_conv(x, conv.weight, dilation, groups).backward(grad)

    a, b = bench(chosen), bench(direct)
    print(f"{cin:3d} -> {cout:3d} @ {size:2d}, {k}x{k}, groups {groups:2d}, dilation {dilation}: chosen {a:6.2f}, "
          f"direct {b:6.2f} ({a / b:.2f}x)")

print("\n## the direct kernel's passes alone, ms, batch 128, bf16 tensors")
ext = _load()
for cin, cout, size, k, groups, dilation in CASES[:9]:
    cg, og = cin // groups, cout // groups
    x = torch.randn(128, size, size, cin).bfloat16()
    grad = torch.randn(128, size, size, cout).bfloat16()
    lanes = torch.randn(og, cin // 16, k, k, 16)
    fwd = bench(lambda: ext.forward(x, lanes, k, dilation, cg, og), 10)
    bwd_x = bench(lambda: ext.backward_input(grad, lanes, k, dilation, cg, og), 10)
    bwd_w = bench(lambda: ext.backward_weight(x, grad, k, dilation, cg, og), 10)
    macs = 128 * size * size * cout * cg * k * k
    print(f"{cin:3d} -> {cout:3d} @ {size:2d}, {k}x{k}, groups {groups:2d}: forward {fwd:5.2f} "
          f"({macs / fwd / 1e6:4.0f} GMAC/s), input gradient {bwd_x:5.2f}, weight gradient {bwd_w:5.2f}")
