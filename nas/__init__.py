"""Attention-aware neural architecture search.

Public API::

    cfg = nas.load_config("model.yaml")     # or nas.preset_config("resnet20")
    model = nas.build_model(cfg)
"""
from .config import ArchConfig, AttentionSpec, BlockConfig, StageConfig, load_config, structure_hash
from .errors import ConfigError, DataError, NasError
from .models import build_model, count_parameters
from .presets import paper_config, preset_config, preset_names
from .profile import profile

__all__ = [
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
__version__ = "0.2.0"
