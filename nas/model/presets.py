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

from ..attention import attention_defaults, attention_kind, attention_names
from ..attention.emsa import EMSA, smallest_fitting_sr
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
# How each paper places its module in its own ResNet-50-class model:
# (backbone preset it reports, where the stride sits in that paper's FLOP
# count, block position, per-stage hyper-parameters). Sources in
# tests/test_paper_figures.py.
_PAPER_PLACEMENT: dict[str, dict] = {
    # SE Caffe models stride on the first 1x1 (hujie-frank/SENet prototxt)
    "se": dict(backbone="resnet50", stride_on="1x1", position="standard"),
    # released ECA-Net50 is trained with k = 3, 5, 5, 7 per stage (BangguWu/ECANet, "k3557")
    "eca": dict(backbone="resnet50", stride_on="3x3", position="standard",
                per_stage={"k_size": [3, 5, 5, 7]}),
    "cbam": dict(backbone="resnet50", stride_on="1x1", position="standard"),
    # once after each of the first three stages (Park et al. sec. 3, Fig. 1);
    # the branches multiplied, as the official code that trained the
    # published models does (nas/attention/bam.py)
    "bam": dict(backbone="resnet50", stride_on="1x1", params={"combine": "product"}),
    "sa": dict(backbone="resnet50", stride_on="3x3", position="standard"),
    "psa": dict(backbone="resnet50", stride_on="3x3"),
    "sk": dict(backbone="resnext50_32x4d", stride_on="3x3"),
    # DANet and EA were published as heads on top of a backbone, not per block:
    # the closest placement is after the last block, where resolution is lowest
    "danet": dict(backbone=None, position="post", last_block_only=True),
    "ea": dict(backbone=None, position="post", last_block_only=True),
    # SCNet-50 is torchvision's ResNet-50 with every bottleneck's 3x3 unit
    # self-calibrated (backseason/SCNet, scnet50: no deep stem, no avg-down)
    "sc": dict(backbone="resnet50", stride_on="3x3"),
    # ResT puts x + EMSA(LN(x)) in every block, on the main path (the block
    # output here); heads and sr per stage as ResT-Lite, fitted in _fit_groups
    "emsa": dict(backbone=None, position="post"),
}
#: ResT-Lite's heads and key/value reduction per stage (wofmanaf/ResT, rest_lite)
_REST_LITE = {"heads": (1, 2, 4, 8), "sr": (8, 4, 2, 1)}


def paper_config(backbone: str, attention: str, **overrides) -> ArchConfig:
    """``backbone`` with ``attention`` placed as its paper places it, at the
    paper's default hyper-parameters (``overrides`` replace them, e.g.
    ``r=8``). ``stride_on`` may be overridden too; by default it is the layout
    the paper counted its FLOPs on when the backbone is the paper's own."""

    if attention not in attention_names():
        raise ConfigError(f"unknown attention {attention!r}; allowed: {', '.join(attention_names())}")
    cfg = preset_config(backbone)
    if attention == "none":
        return cfg
    place = _PAPER_PLACEMENT[attention]
    stride_on = overrides.pop("stride_on", None)
    if stride_on is None and cfg.block == "bottleneck" and place.get("backbone") in (backbone, None):
        stride_on = place.get("stride_on", "3x3")
    if stride_on is not None:
        cfg.stride_on = stride_on
    defaults = attention_defaults(attention)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"{unknown[0]!r} is not a parameter of {attention}; allowed: {', '.join(defaults)}")
    per_stage = place.get("per_stage", {}) if place.get("backbone") == backbone else {}
    kind = attention_kind(attention)
    last = len(cfg.stages) - 1
    for s, stage in enumerate(cfg.stages):
        params = {k: v for k, v in place.get("params", {}).items() if k not in overrides}
        params.update({k: v[s] for k, v in per_stage.items() if k not in overrides and s < len(v)})
        params.update(_fit_groups(attention, defaults, overrides, cfg, s))
        params.update(overrides)
        if kind == "transition":
            if s < last:
                stage.transition = AttentionSpec(attention, "standard", dict(params))
            continue
        for b, block in enumerate(stage.blocks):
            if place.get("last_block_only") and (s, b) != (last, len(stage.blocks) - 1):
                continue
            block.attention = AttentionSpec(attention, place.get("position", "standard"), dict(params))
    cfg.backbone = f"{backbone}+{attention}"
    return cfg


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def _fit_groups(attention: str, defaults: dict, overrides: dict, cfg: ArchConfig, s: int) -> dict:
    """Group counts the paper set for ResNet-50 widths do not divide a small
    CIFAR stage (SA's G = 64 with 16 channels): use the largest divisor not
    above the paper's value (and PSA's r no larger than a part's channels);
    EMSA takes ResT-Lite's heads and sr of the same stage, fitted to the
    stage (:func:`_fit_emsa`). On the paper's own backbone nothing changes. Values the caller set are
    left alone."""
    width = cfg.stages[s].width
    mid = int(width * cfg.base_width / 64) * cfg.groups if cfg.block == "bottleneck" else width
    out = width * cfg.expansion
    # a basic block's replaceable conv reads the stage input (the previous
    # stage's output, in the first block): groups must divide that too
    if cfg.block == "basic":
        conv_in = cfg.stem_width if s == 0 else cfg.out_channels(s - 1)
        mid = math.gcd(mid, conv_in)
    if attention == "sa" and "groups" not in overrides:
        return {"groups": _largest_divisor(out // 2, defaults["groups"])}
    if attention == "sk" and "G" not in overrides:
        return {"G": _largest_divisor(mid, defaults["G"])}
    if attention == "emsa":
        return _fit_emsa(overrides, cfg, s, out)
    if attention == "sc" and "groups" not in overrides and cfg.groups > 1:
        # the official SCConv takes the backbone's cardinality
        return {"groups": _largest_divisor(mid // 2, cfg.groups)}
    if attention == "psa" and "groups" not in overrides:
        kernels = overrides.get("kernels", defaults["kernels"])
        split = mid // len(kernels)
        fitted = {"groups": [_largest_divisor(split, g) for g in defaults["groups"]][: len(kernels)]}
        if "r" not in overrides:
            fitted["r"] = min(defaults["r"], split)
        return fitted
    return {}


def _fit_emsa(overrides: dict, cfg: ArchConfig, s: int, channels: int) -> dict:
    """ResT-Lite's heads and sr for stage ``s`` (its last for deeper stages),
    heads cut to a divisor of the channels and sr raised to the smallest
    whose attention map fits the stage's output (where the post position
    reads it): on ResNet-50 at 224 the 56 x 56 first stage needs sr 14, not 8."""

    i = min(s, len(_REST_LITE["sr"]) - 1)
    fitted = {}
    if "heads" not in overrides:
        fitted["heads"] = _largest_divisor(channels, _REST_LITE["heads"][i])
    if "sr" not in overrides:
        side = stage_feature_sizes(cfg)[s]
        fitted["sr"] = min(max(_REST_LITE["sr"][i], smallest_fitting_sr(side, EMSA.max_map) or side), side)
    return fitted
