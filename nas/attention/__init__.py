"""Attention modules, one per file, built by name through one registry.

    create_attention("se", 256, r=8)      # any module: name, channels, hyper-parameters
    register_attention("mine", Mine)      # Mine: an AttentionModule declaring its facts
"""
from ._base import AttentionModule, PaperPlacement, StageFacts, largest_divisor
from ._registry import (
    KINDS,
    attention_defaults,
    attention_kind,
    attention_names,
    create_attention,
    module_class,
    register_attention,
    registered_name,
    unregister_attention,
)
from .bam import BAM
from .cbam import CBAM
from .danet import DualAttention
from .ea import ExternalAttention
from .eca import ECA
from .emsa import EMSA
from .none import NoAttention
from .psa import PSAConv
from .sa import ShuffleAttention
from .sc import SCConv
from .se import SqueezeExcite
from .sk import SKConv

#: Raised whenever a module computes something else for the same config, so
#: that results of older code are neither reused nor compared with new ones
#: (it is part of every search fidelity's key). 2: CBAM's map order and BN
#: momentum, PSA's part order and DANet's identity gate follow the official code.
COMPUTE_REVISION = 2

register_attention("none", NoAttention)
register_attention("se", SqueezeExcite)
register_attention("sk", SKConv)
register_attention("eca", ECA)
register_attention("cbam", CBAM)
register_attention("bam", BAM)
register_attention("sa", ShuffleAttention)
register_attention("psa", PSAConv)
register_attention("danet", DualAttention)
register_attention("ea", ExternalAttention)
register_attention("sc", SCConv)
register_attention("emsa", EMSA)

__all__ = [
    "COMPUTE_REVISION",
    "KINDS",
    "AttentionModule",
    "PaperPlacement",
    "StageFacts",
    "attention_defaults",
    "attention_kind",
    "attention_names",
    "create_attention",
    "largest_divisor",
    "module_class",
    "register_attention",
    "registered_name",
    "unregister_attention",
]
