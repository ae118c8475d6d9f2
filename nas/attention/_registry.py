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

Every module subclasses :class:`~nas.attention._base.AttentionModule` and
declares there, in its own file, every fact the rest of the package needs
about it: its paper placement (``paper_placement``), how its hyper-parameters
fit a stage (``fit_to_stage``), how long its list hyper-parameters are
(``list_length``, ``suggest_last``), the limits of the maps it accepts
(``max_tokens``, ``check_feature_size``), hyper-parameters added later
(``legacy_defaults``) and how its old checkpoints convert
(``upgrade_state_format_1``); the base's docstring lists them with their
defaults. Presets, search spaces and checkpoints ask the registered class
and name no module.

Adding a module is one new file, its class, and one
:func:`register_attention` call (``nas/attention/__init__.py`` registers the
built-in ones; code outside the package may register its own the same way,
and :func:`unregister_attention` removes it again).
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ._base import AttentionModule

KINDS = ("gate", "conv", "transition")

_REGISTRY: dict[str, type[AttentionModule]] = {}

# Constructor arguments that the block supplies itself; they are not
# hyper-parameters a config or search space may set.
_STRUCTURAL_ARGS = frozenset({"channels", "out_channels", "stride"})


def register_attention(name: str, cls: type[AttentionModule]) -> type[AttentionModule]:
    """Register ``cls``, a subclass of :class:`AttentionModule`, under
    ``name`` (lower case)."""
    if not (isinstance(cls, type) and issubclass(cls, AttentionModule)):
        raise TypeError(f"{getattr(cls, '__name__', cls)!r} must subclass nas.attention.AttentionModule")
    kind = getattr(cls, "kind", None)
    if kind not in KINDS:
        raise TypeError(f"{cls.__name__}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _REGISTRY[name] = cls
    return cls


def unregister_attention(name: str) -> None:
    """Remove the module registered under ``name``."""
    _lookup(name)
    del _REGISTRY[name]


def attention_names() -> list[str]:
    """Registered names, ``none`` first, then alphabetical."""
    return sorted(_REGISTRY, key=lambda n: (n != "none", n))


def _lookup(name: str) -> type[AttentionModule]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown attention type {name!r}; allowed: {', '.join(attention_names())}"
        ) from None


def module_class(name: str) -> type[AttentionModule]:
    """The class registered under ``name``: ask it for the module's facts
    (:class:`AttentionModule`)."""
    return _lookup(name)


def registered_name(cls: type[AttentionModule]) -> str:
    """The name ``cls`` is registered under (the first, if several)."""
    for name, registered in _REGISTRY.items():
        if registered is cls:
            return name
    raise ValueError(f"{cls.__name__} is not a registered attention module")


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
