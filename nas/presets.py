"""Named backbones as explicit :class:`~nas.config.ArchConfig` objects.

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

from .config import ArchConfig, AttentionSpec, BlockConfig, StageConfig
from .errors import ConfigError

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
