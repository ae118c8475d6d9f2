"""Probe, not part of the tool: what inductor (torch.compile) would give CBAM
in bf16. docs/measurements/attention-speed.md, "CBAM compiled by inductor in training".

1. a CBAM (r 4) alone at the three resnet20 stage shapes, batch 128,
   forward + backward: the shipped module, the plain formulation eager, and
   the plain formulation compiled;
2. resnet20 training steps at batch 128: none, CBAM as shipped, CBAM with
   each module's forward replaced by the compiled plain formulation, in
   interleaved rounds; then the largest output difference of the two CBAM
   models for the same weights;
3. what a trainer would meet: the compiled model's step time at the epoch's
   last, smaller batch (40), at another (72), and an evaluation forward;
   each new shape or mode compiles again (TORCH_LOGS=recompiles shows why).

    python benchmarks/probes/cbam_inductor_probe.py
"""
import statistics
import time
import types

import torch
import torch.nn.functional as F

import nas
from nas.attention.cbam import CBAM
from nas.device import configure_threads, resolve_runtime

configure_threads()
runtime = resolve_runtime("cpu", "bf16")


def plain(m, x):
    """CBAM's forward written plainly (the shipped one picks kernels by measurement)."""
    n, c = x.shape[:2]
    pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))])
    hidden = F.relu(F.linear(pooled, m.fc1.weight.flatten(1), m.fc1.bias))
    avg, top = F.linear(hidden, m.fc2.weight.flatten(1), m.fc2.bias).view(2, n, c, 1, 1)
    x = x * (avg + top).sigmoid().to(x.dtype)
    descriptor = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
    return x * m.spatial_bn(m.spatial(descriptor)).sigmoid().to(x.dtype)


compiled = torch.compile(plain)


def module_ms(f, x, reps=20):
    for _ in range(3):
        f(x).backward(torch.ones_like(x))
    start = time.perf_counter()
    for _ in range(reps):
        f(x).backward(torch.ones_like(x))
    return (time.perf_counter() - start) / reps * 1e3


def build(name, use_compiled=False):
    torch.manual_seed(0)
    model = nas.build_model(nas.paper_config("resnet20", name)).to(memory_format=torch.channels_last).train()
    if use_compiled:
        for module in model.modules():
            if isinstance(module, CBAM):
                module.forward = types.MethodType(compiled, module)
    return model


def main():
    torch.manual_seed(0)
    for channels, size in ((16, 32), (32, 16), (64, 8)):
        module = CBAM(channels, r=4)
        x = torch.randn(128, channels, size, size).to(memory_format=torch.channels_last)
        x = x.bfloat16().requires_grad_()
        with runtime.autocast():
            shipped = module_ms(module, x)
            eager = module_ms(lambda t: plain(module, t), x)
            fused = module_ms(lambda t: compiled(module, t), x)
        print(f"CBAM C{channels} {size}x{size} bf16, ms forward+backward: shipped {shipped:.2f}, "
              f"plain eager {eager:.2f}, plain compiled {fused:.2f}", flush=True)

    x = torch.randn(128, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))

    def step(model):
        start = time.perf_counter()
        with runtime.autocast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    models = {"none": build("none"), "cbam": build("cbam"), "cbam compiled": build("cbam", True)}
    for name, model in models.items():
        start = time.perf_counter()
        for _ in range(3):
            step(model)
        print(f"{name}: first 3 steps (compilation included) {time.perf_counter() - start:.1f} s", flush=True)
    times = {name: [] for name in models}
    for _ in range(9):
        for name, model in models.items():
            times[name].append(step(model))
    base = statistics.median(times["none"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:14s} {median * 1e3:7.1f} ms  {median / base:.2f}x vs none")
    with runtime.autocast():
        a, b = build("cbam")(x).float(), build("cbam", True)(x).float()
    print(f"largest output difference, shipped vs compiled: {(a - b).abs().max().item():.4f} "
          f"(output scale {a.abs().max().item():.2f})")

    model = models["cbam compiled"]
    for batch in (40, 72, 128):
        start = time.perf_counter()
        with runtime.autocast():
            loss = F.cross_entropy(model(x[:batch]), y[:batch])
        loss.backward()
        model.zero_grad(set_to_none=True)
        print(f"compiled model, one training step at batch {batch}: {time.perf_counter() - start:.2f} s", flush=True)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad(), runtime.autocast():
        model(x)
    print(f"compiled model, one evaluation forward at batch 128: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
