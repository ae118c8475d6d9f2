"""Build a network from an :class:`~nas.model.config.ArchConfig`.

``build_model(cfg)`` is the only way configs become modules, so a config read
back from an exported YAML builds the same network the search trained.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..kernels.pool import global_avg_pool
from .blocks import BLOCKS, build_attention
from .config import ArchConfig


def _stem_output_size(cfg: ArchConfig) -> int:
    size = cfg.input_size
    if cfg.stem == "imagenet":  # 7x7 stride-2 conv, then 3x3 stride-2 max-pool
        size = (size + 1) // 2
        size = (size + 1) // 2
    return size


def stage_feature_sizes(cfg: ArchConfig) -> list[int]:
    """Spatial side length of each stage's output for ``cfg.input_size``."""
    size = _stem_output_size(cfg)
    sizes = []
    for stage in cfg.stages:
        size = (size + stage.stride - 1) // stage.stride
        sizes.append(size)
    return sizes


class ResNet(nn.Module):
    """Stem, stages ``layer1..layerN`` (each optionally followed by a stage
    transition module ``transitionK``), global average pooling, linear head."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        block_cls = BLOCKS[cfg.block]
        w = cfg.stem_width
        if cfg.stem == "cifar":
            self.conv1 = nn.Conv2d(cfg.in_channels, w, 3, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(cfg.in_channels, w, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)

        channels = w
        sizes = stage_feature_sizes(cfg)
        size = _stem_output_size(cfg)
        self._stage_names: list[str] = []
        for s, stage in enumerate(cfg.stages):
            blocks = []
            for b, block in enumerate(stage.blocks):
                blocks.append(block_cls(
                    channels, stage.width, stage.stride if b == 0 else 1, block.attention,
                    groups=cfg.groups, base_width=cfg.base_width, shortcut=cfg.shortcut, stride_on=cfg.stride_on,
                    where=f"stages[{s}].blocks[{b}].attention", in_size=size, out_size=sizes[s],
                ))
                channels, size = blocks[-1].out_channels, sizes[s]
            name = f"layer{s + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self._stage_names.append(name)
            if stage.transition is not None and stage.transition.type != "none":
                tname = f"transition{s + 1}"
                self.add_module(tname, build_attention(stage.transition, channels, f"stages[{s}].transition", size))
                self._stage_names.append(tname)
        self.fc = nn.Linear(channels, cfg.num_classes)
        self.num_features = channels
        self._init_weights()

    def _init_weights(self) -> None:
        # He et al. 2015 (arXiv 1502.01852) init for convs, as torchvision does;
        # attention modules that need another init (DANet's zero gammas) set it
        # in their own constructor, so only plain conv/BN layers are touched here.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def zero_init_residual(self) -> None:
        """Start every residual branch at zero (Goyal et al. 2017, arXiv
        1706.02677, sec. 5.1): each block is the identity at first."""
        for m in self.modules():
            if hasattr(m, "last_bn") and isinstance(m.last_bn, nn.BatchNorm2d):
                nn.init.zeros_(m.last_bn.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self._stage_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        # global_avg_pool, not nn.AdaptiveAvgPool2d: its gradient keeps the
        # channels_last layout, so the last block's backward stays on fast kernels
        x = global_avg_pool(self.forward_features(x)).flatten(1)
        return self.fc(x)


def build_model(cfg: ArchConfig) -> ResNet:
    """The network ``cfg`` describes. Raises ConfigError naming the block if a
    module rejects its hyper-parameters."""
    if not isinstance(cfg, ArchConfig):
        raise ConfigError(f"build_model expects an ArchConfig, got {type(cfg).__name__}")
    return ResNet(cfg)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
