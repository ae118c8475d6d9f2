"""Attention-aware neural architecture search.

Public API::

    cfg = nas.load_config("model.yaml")     # or nas.preset_config("resnet20")
    model = nas.build_model(cfg)
"""
from .errors import ConfigError, DataError, NasError
from .model.config import (
    ArchConfig,
    AttentionSpec,
    BlockConfig,
    StageConfig,
    load_config,
    structure_hash,
)
from .model.network import build_model, count_parameters
from .model.presets import paper_config, preset_config, preset_names
from .model.profile import profile
from .provenance import __version__

__all__ = [
    "__version__",
    "ArchConfig",
    "AttentionSpec",
    "BlockConfig",
    "ConfigError",
    "DataError",
    "NasError",
    "StageConfig",
    "build_model",
    "count_parameters",
    "load_config",
    "paper_config",
    "profile",
    "preset_config",
    "preset_names",
    "structure_hash",
]
