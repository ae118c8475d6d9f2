"""Checkpoints: a trained model's weights with the architecture that
rebuilds it (``search.py train`` writes them next to the YAML, ``promote``
attaches one to each training as an optuna-dashboard artifact)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..attention import AttentionModule, registered_name
from ..errors import ConfigError, NasError, one_line
from .config import ArchConfig
from .network import build_model

#: 2: the modules follow the official code (nas.attention.COMPUTE_REVISION 2);
#: format-1 checkpoints were saved before that, and each module's
#: ``upgrade_state_format_1`` converts its weights or refuses (_upgrade_format_1)
CHECKPOINT_FORMAT = 2


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: ArchConfig, mean, std) -> None:
    """A plain dict of tensors and strings, loadable with ``weights_only=True``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "state_dict": state, "structure_hash": cfg.structure_hash(),
               "config_yaml": cfg.to_yaml(), "mean": list(mean), "std": list(std)}
    tmp = Path(str(path) + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str | Path, cfg: ArchConfig | None = None) -> tuple[torch.nn.Module, dict]:
    """Model with the checkpoint's weights. With ``cfg``, the checkpoint must
    be of that architecture (same structural hash)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NasError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # unpickling refused or file corrupt: one clear line
        raise NasError(f"cannot load checkpoint {path}: {one_line(exc)}") from None
    saved_cfg = ArchConfig.from_yaml(payload["config_yaml"], source=str(path))
    if cfg is not None and cfg.structure_hash() != payload["structure_hash"]:
        raise ConfigError(f"checkpoint {path} is of architecture {payload['structure_hash']}, "
                          f"the config is {cfg.structure_hash()}")
    model = build_model(cfg or saved_cfg)
    state = payload["state_dict"]
    if payload.get("format", 1) == 1:
        state = _upgrade_format_1(model, state, path)
    model.load_state_dict(state)
    return model, payload


def _upgrade_format_1(model: torch.nn.Module, state: dict, path: str | Path) -> dict:
    """Weights saved before the modules followed the official code: each
    attention module converts its own (``upgrade_state_format_1``); one
    whose change no weight conversion undoes refuses the checkpoint."""

    state = dict(state)
    for name, module in model.named_modules():
        if isinstance(module, AttentionModule) and not type(module).upgrade_state_format_1(name, state):
            try:
                what = registered_name(type(module))
            except ValueError:  # a module inside another, not registered itself
                what = type(module).__name__
            raise NasError(f"checkpoint {path} was saved by an earlier version whose {what} module computed "
                           f"something else ({name}); retrain it: python search.py train CONFIG.yaml")
    return state
