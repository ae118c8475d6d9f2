"""Attention modules, one per file, built by name through one registry."""
from ._registry import (
    KINDS,
    attention_defaults,
    attention_kind,
    attention_names,
    create_attention,
    register_attention,
)
from .none import NoAttention

register_attention("none", NoAttention)

__all__ = [
    "KINDS",
    "attention_defaults",
    "attention_kind",
    "attention_names",
    "create_attention",
    "register_attention",
]
