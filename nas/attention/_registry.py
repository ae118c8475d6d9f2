"""One registry that builds every attention module from a name.

Convention (as in timm's ``layers/create_attn``): every module class takes the
channel count as its only positional argument and its hyper-parameters as
keyword arguments with the paper's defaults, and declares a class attribute
``kind``:

* ``"gate"``: maps C x H x W to C x H x W; the block places it at one of the
  positions of :data:`nas.model.config.POSITIONS`.
* ``"conv"``: replaces the block's 3x3 conv unit (conv + BN + ReLU); it is
  built as ``cls(in_channels, out_channels=..., stride=..., **hyperparameters)``.
* ``"transition"``: placed once at the end of a stage (BAM), not per block.

A module whose hyper-parameters must fit the feature map it sees (a pooling
rate, a reduction stride, an attention map's size) defines
``check_feature_size(self, size)``, raising ``ValueError`` that names the
parameter; the block calls it with the side of the map the module reads.

Adding a module means one new file and one :func:`register_attention` line.
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

KINDS = ("gate", "conv", "transition")

_REGISTRY: dict[str, type[nn.Module]] = {}

# Constructor arguments that the block supplies itself; they are not
# hyper-parameters a config or search space may set.
_STRUCTURAL_ARGS = frozenset({"channels", "out_channels", "stride"})


def register_attention(name: str, cls: type[nn.Module]) -> type[nn.Module]:
    """Register ``cls`` under ``name`` (lower case)."""
    kind = getattr(cls, "kind", None)
    if kind not in KINDS:
        raise TypeError(f"{cls.__name__}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _REGISTRY[name] = cls
    return cls


def attention_names() -> list[str]:
    """Registered names, ``none`` first, then alphabetical."""
    return sorted(_REGISTRY, key=lambda n: (n != "none", n))


def _lookup(name: str) -> type[nn.Module]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown attention type {name!r}; allowed: {', '.join(attention_names())}"
        ) from None


def module_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``."""
    return _lookup(name)


def attention_kind(name: str) -> str:
    """``gate``, ``conv`` or ``transition`` (see module docstring)."""
    return _lookup(name).kind


def _hyperparameter_defaults(cls: type[nn.Module]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {
        p.name: p.default
        for p in list(params.values())[1:]  # skip self
        if p.name not in _STRUCTURAL_ARGS
        and p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def attention_defaults(name: str) -> dict[str, Any]:
    """The hyper-parameters of ``name`` with their (paper) defaults."""
    return _hyperparameter_defaults(_lookup(name))


def create_attention(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """Build attention module ``name`` for ``channels`` input channels.

    Unknown names or hyper-parameters raise ``ValueError`` naming the allowed
    values; invalid values raise ``ValueError`` from the module itself.
    """
    cls = _lookup(name)
    allowed = set(_hyperparameter_defaults(cls))
    if cls.kind == "conv":
        allowed |= {"out_channels", "stride"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r} for attention {name!r}; "
            f"allowed: {', '.join(sorted(allowed)) or '(none)'}"
        )
    return cls(channels, **kwargs)
