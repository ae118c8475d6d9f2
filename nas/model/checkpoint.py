"""Checkpoints: a trained model's weights with the architecture that
rebuilds it (``search.py train`` writes them next to the YAML, ``promote``
attaches one to each training as an optuna-dashboard artifact)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..attention import CBAM, DualAttention, PSAConv
from ..errors import ConfigError, NasError, one_line
from .config import ArchConfig
from .network import build_model

#: 2: CBAM stacks its pooled maps [max, mean], PSA concatenates its parts
#: last first and the DANet gate adds x once (the official code's choices);
#: format-1 checkpoints were saved before that (see _upgrade_format_1)
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
    """Weights saved before CBAM, PSA and DANet followed the official code.
    CBAM's change is a swap of its spatial conv's two input maps, so its
    weights are converted exactly; PSA's reversed part order and DANet's
    single skip change what the rest of the block sees, which no weight
    conversion undoes: such a checkpoint is refused."""

    state = dict(state)
    for name, module in model.named_modules():
        if isinstance(module, CBAM):
            key = f"{name}.spatial.weight"
            state[key] = state[key].flip(1)  # was [mean, max], is [max, mean]
        elif isinstance(module, (PSAConv, DualAttention)):
            what = "psa" if isinstance(module, PSAConv) else "danet"
            raise NasError(f"checkpoint {path} was saved by an earlier version whose {what} module computed "
                           f"something else ({name}); retrain it: python search.py train CONFIG.yaml")
    return state
