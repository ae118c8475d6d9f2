"""Zero-cost scores: numbers computed from an untrained network that are
meant to rank architectures without training them. ``calibrate`` measures
how well each ranks a space against a longer training, next to the two
baselines White et al. ("A Deeper Look at Zero-Cost Proxies", ICLR 2022
blog track) found hard to beat: parameter count and MACs.

* synflow (Tanaka et al. 2020, arXiv 2006.05467; used as a NAS proxy by
  Abdelfattah et al. 2021, arXiv 2101.08134, section 3): with every weight
  replaced by its absolute value and an all-ones input, R = sum of the
  outputs; the score is sum over conv and linear weights of |theta * dR/dtheta|.
  Data-free. Normalisation layers run with their initial statistics (eval
  mode), i.e. as the identity scaling, and the sums are taken in float64
  so that deep products do not overflow.
* grad_norm (Abdelfattah et al. 2021, section 3): the sum over conv and
  linear weights of the L2 norm of the cross-entropy gradient on one batch.
* naswot (Mellor et al. 2021, arXiv 2006.04647 v3, Eq. 2): each image's
  binary code of which ReLU units are active (every ReLU the forward pass
  applies, module or functional); K_H[i, j] = N_A - Hamming distance of the
  codes of images i and j; the score is log |det K_H|.

Every score here is "higher predicts more accurate"; MACs and params too.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..training.train import normalise

#: the names in the order calibrate prints them
SCORES = ("synflow", "grad_norm", "naswot", "params", "macs")


def _weights(model: nn.Module):
    """Conv and linear weights: the layers these scores sum over."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and module.weight.requires_grad:
            yield module.weight


def synflow(model: nn.Module, input_shape: tuple[int, int, int]) -> float:
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    net.zero_grad(set_to_none=True)
    out = net(torch.ones((1, *input_shape), dtype=torch.float64, device=next(net.parameters()).device))
    out.sum().backward()
    with torch.no_grad():
        return float(sum((w * w.grad).abs().sum() for w in _weights(net) if w.grad is not None))


def grad_norm(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(images), labels).backward()
    return float(sum(w.grad.norm() for w in _weights(net) if w.grad is not None))


#: every way the models apply a ReLU: nn.ReLU calls F.relu; attention
#: modules also call F.relu / torch.relu directly
_RELUS = {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}


class _ReluCodes(TorchFunctionMode):
    """Sees the output of every ReLU applied while it is active, however it
    is called (a module hook would miss the functional ones)."""

    def __init__(self, record: Callable[[Tensor], None]) -> None:
        super().__init__()
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _RELUS:
            self.record(out)
        return out


def naswot(model: nn.Module, images: Tensor) -> float:
    net = copy.deepcopy(model).train()
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=images.device)

    def record(output: Tensor) -> None:
        codes = (output.detach().reshape(n, -1) > 0).double()
        # matching units: both active plus both inactive = N_A - Hamming distance
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    with torch.no_grad(), _ReluCodes(record):
        net(images)
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else float("-inf")


def zero_cost_scores(model: nn.Module, images: Tensor, labels: Tensor, mean, std, cost: dict,
                     batch_size: int = 64, seed: int = 0) -> dict[str, float]:
    """Every score of :data:`SCORES` for ``model`` at its initial weights
    (left untouched). The batch is ``batch_size`` training images drawn
    with ``seed``, without augmentation; ``cost`` is :func:`nas.model.profile.profile`'s."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(labels), generator=generator)[:batch_size]
    device = next(model.parameters()).device
    x = normalise(images[pick], mean, std).to(device)
    y = labels[pick].to(device)
    torch.manual_seed(seed)
    scorers: dict[str, Callable[[], float]] = {
        "synflow": lambda: synflow(model, tuple(x.shape[1:])),
        "grad_norm": lambda: grad_norm(model, x, y),
        "naswot": lambda: naswot(model, x),
        "params": lambda: float(cost["params"]),
        "macs": lambda: float(cost["macs"]),
    }
    return {name: scorers[name]() for name in SCORES}
