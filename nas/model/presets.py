"""Named backbones as explicit :class:`~nas.model.config.ArchConfig` objects.

CIFAR ResNets follow He et al. 2016 (arXiv 1512.03385) sec. 4.2: a 3x3 stem
with 16 filters, three stages of ``n`` basic blocks at widths 16/32/64 (depth
``6n + 2``), option-A shortcuts, global pooling and a linear classifier.
``resnet164`` is the CIFAR bottleneck variant (``n = 18`` bottleneck blocks
per stage, outputs 64/128/256, projection shortcuts; He et al. 2016b,
arXiv 1603.05027). The ImageNet presets use torchvision's layout: a 7x7 stem
with max-pooling, bottleneck stages [3, 4, 6, 3] with the stride on the 3x3
conv ("ResNet v1.5") and, for ResNeXt-50 32x4d (Xie et al., arXiv
1611.05431), 32 groups of width 4 in the 3x3 convs.
"""
from __future__ import annotations

import math

from ..attention import (
    StageFacts,
    attention_defaults,
    attention_kind,
    attention_names,
    module_class,
)
from ..errors import ConfigError
from .config import ArchConfig, AttentionSpec, BlockConfig, StageConfig
from .network import stage_feature_sizes

_CIFAR_BASIC = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}

_PRESETS = {
    **{
        name: dict(block="basic", stem="cifar", stem_width=16, widths=(16, 32, 64),
                   depths=(n, n, n), strides=(1, 2, 2), shortcut="A", num_classes=10, input_size=32)
        for name, n in _CIFAR_BASIC.items()
    },
    "resnet164": dict(block="bottleneck", stem="cifar", stem_width=16, widths=(16, 32, 64),
                      depths=(18, 18, 18), strides=(1, 2, 2), shortcut="B", num_classes=10, input_size=32),
    "resnet50": dict(block="bottleneck", stem="imagenet", stem_width=64, widths=(64, 128, 256, 512),
                     depths=(3, 4, 6, 3), strides=(1, 2, 2, 2), shortcut="B", num_classes=1000,
                     input_size=224),
    "resnext50_32x4d": dict(block="bottleneck", stem="imagenet", stem_width=64,
                            widths=(64, 128, 256, 512), depths=(3, 4, 6, 3), strides=(1, 2, 2, 2),
                            shortcut="B", num_classes=1000, input_size=224, groups=32, base_width=4),
}


def preset_names() -> list[str]:
    return list(_PRESETS)


def preset_config(name: str, num_classes: int | None = None, width_multiplier: float = 1.0,
                  input_size: int | None = None) -> ArchConfig:
    """The explicit config of preset ``name`` with no attention anywhere.

    ``width_multiplier`` scales the stem and every stage width (rounded to the
    nearest integer, at least 1).
    """
    try:
        p = dict(_PRESETS[name])
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; allowed: {', '.join(_PRESETS)}") from None
    if not width_multiplier > 0:
        raise ConfigError(f"width_multiplier: must be > 0, got {width_multiplier}")

    def scale(w: int) -> int:
        return max(1, int(round(w * width_multiplier)))

    stages = [
        StageConfig(width=scale(w), stride=s, blocks=[BlockConfig(AttentionSpec()) for _ in range(d)])
        for w, d, s in zip(p.pop("widths"), p.pop("depths"), p.pop("strides"))
    ]
    p["stem_width"] = scale(p["stem_width"])
    if num_classes is not None:
        p["num_classes"] = num_classes
    if input_size is not None:
        p["input_size"] = input_size
    return ArchConfig(backbone=name, stages=stages, **p)


# --------------------------------------------------------------------------- paper placements


def paper_config(backbone: str, attention: str, **overrides) -> ArchConfig:
    """``backbone`` with ``attention`` placed as its paper places it, at the
    paper's default hyper-parameters (``overrides`` replace them, e.g.
    ``r=8``). ``stride_on`` may be overridden too; by default it is the layout
    the paper counted its FLOPs on when the backbone is the paper's own.

    The placement is the module's ``paper_placement`` and the fitting of its
    hyper-parameters to each stage its ``fit_to_stage``
    (:class:`nas.attention.AttentionModule`); the sources are cited there and
    checked in tests/test_paper_figures.py."""

    if attention not in attention_names():
        raise ConfigError(f"unknown attention {attention!r}; allowed: {', '.join(attention_names())}")
    cfg = preset_config(backbone)
    if attention == "none":
        return cfg
    cls = module_class(attention)
    place = cls.paper_placement
    if place is None:
        raise ConfigError(f"attention {attention!r} declares no paper placement ({cls.__name__}.paper_placement)")
    stride_on = overrides.pop("stride_on", None)
    if stride_on is None and cfg.block == "bottleneck" and place.backbone in (backbone, None):
        stride_on = place.stride_on
    if stride_on is not None:
        cfg.stride_on = stride_on
    defaults = attention_defaults(attention)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"{unknown[0]!r} is not a parameter of {attention}; allowed: {', '.join(defaults)}")
    per_stage = place.per_stage if place.backbone == backbone else {}
    kind = attention_kind(attention)
    last = len(cfg.stages) - 1
    sizes = stage_feature_sizes(cfg)
    for s, stage in enumerate(cfg.stages):
        params = {k: v for k, v in place.params.items() if k not in overrides}
        params.update({k: v[s] for k, v in per_stage.items() if k not in overrides and s < len(v)})
        params.update(cls.fit_to_stage(defaults, overrides, _stage_facts(cfg, s, sizes[s])))
        params.update(overrides)
        if kind == "transition":
            if s < last:
                stage.transition = AttentionSpec(attention, "standard", dict(params))
            continue
        for b, block in enumerate(stage.blocks):
            if place.last_block_only and (s, b) != (last, len(stage.blocks) - 1):
                continue
            block.attention = AttentionSpec(attention, place.position, dict(params))
    cfg.backbone = f"{backbone}+{attention}"
    return cfg


def _stage_facts(cfg: ArchConfig, s: int, feature_size: int) -> StageFacts:
    """Stage ``s`` of ``cfg`` as a module fits its hyper-parameters to it."""
    width = cfg.stages[s].width
    mid = int(width * cfg.base_width / 64) * cfg.groups if cfg.block == "bottleneck" else width
    # a basic block's replaceable conv reads the stage input (the previous
    # stage's output, in the first block): groups must divide that too
    if cfg.block == "basic":
        conv_in = cfg.stem_width if s == 0 else cfg.out_channels(s - 1)
        mid = math.gcd(mid, conv_in)
    return StageFacts(index=s, width=width, mid=mid, out=width * cfg.expansion, groups=cfg.groups,
                      feature_size=feature_size)
