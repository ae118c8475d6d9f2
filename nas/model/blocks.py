"""Residual blocks with pluggable attention.

Both blocks share one layout so that attention plugs in the same way:

* a replaceable 3x3 conv unit (``conv`` + ``bn`` + ``act``): a conv-kind
  attention module (SK, PSA, SC) takes the place of all three;
* one optional gate-type module (``self.attention``) at one of
  :data:`nas.model.config.POSITIONS`.

Attribute names follow torchvision's ResNet (``conv1``, ``bn1``, ...,
``downsample``) so torchvision state dicts load into the attention-free
ImageNet presets unchanged.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import attention_kind, create_attention, module_class
from ..errors import ConfigError
from .config import AttentionSpec


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option-A shortcut of He et al. 2016 sec. 4.2: strided identity with the
    extra channels zero-padded, so the shortcut adds no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))


def _shortcut(kind: str, in_channels: int, out_channels: int, stride: int, where: str) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    if kind == "A":
        if out_channels < in_channels:
            raise ConfigError(
                f"{where}: shortcut A cannot reduce channels ({in_channels} -> {out_channels}); use shortcut: B"
            )
        return PadShortcut(in_channels, out_channels, stride)
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


def build_attention(spec: AttentionSpec, channels: int, where: str, feature_size: int | None = None,
                    **structural) -> nn.Module:
    """``create_attention`` with errors turned into a ConfigError naming the
    block and the module's own complaint. Modules whose cost grows with the
    number of positions declare ``max_tokens``; ``feature_size`` (the side of
    the feature map they would see) is checked against it, and against the
    module's own ``check_feature_size`` where it has one."""
    limit = getattr(module_class(spec.type), "max_tokens", None)
    if limit is not None and feature_size is not None and feature_size * feature_size > limit:
        raise ConfigError(
            f"{where}: {spec.type} needs H*W <= {limit} but sees a {feature_size}x{feature_size} map "
            f"({feature_size * feature_size} positions); place it in a later, lower-resolution stage"
        )
    try:
        module = create_attention(spec.type, channels, **structural, **spec.params)
        if feature_size is not None and hasattr(module, "check_feature_size"):
            module.check_feature_size(feature_size)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return module


class _ResidualBlock(nn.Module):
    """Shared wiring; subclasses build the layers and :meth:`_residual`."""

    position: str | None

    def _set_attention(self, spec: AttentionSpec, conv_channels: dict[str, int], where: str,
                       in_size: int | None, out_size: int | None) -> bool:
        """Install a gate at its position; return True if ``spec`` is a conv
        module (the subclass then builds it as its 3x3 unit)."""
        kind = attention_kind(spec.type)
        if kind == "transition":
            raise ConfigError(f"{where}: {spec.type!r} is a stage-transition module; put it under the stage's "
                              "'transition' key, not in a block")
        if kind == "conv":
            self.position, self.attention = None, None
            return True
        if spec.type == "none":
            self.position, self.attention = None, None
        else:
            self.position = spec.position
            size = in_size if spec.position == "pre" else out_size
            self.attention = build_attention(spec, conv_channels[spec.position], where, size)
        return False

    def _conv_unit(self, spec: AttentionSpec, is_conv: bool, in_ch: int, out_ch: int, stride: int,
                   groups: int, where: str, size: int | None) -> tuple[nn.Module, nn.Module, nn.Module]:
        """The 3x3 unit; ``size`` is the side of the map it reads."""
        if is_conv:
            # the module brings its own normalisation and activation
            module = build_attention(spec, in_ch, where, size, out_channels=out_ch, stride=stride)
            return module, nn.Identity(), nn.Identity()
        return conv3x3(in_ch, out_ch, stride, groups), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        pos, gate = self.position, self.attention
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self._residual(gate(x) if pos == "pre" else x)
        if pos == "standard":
            out = gate(out)
        elif pos == "identity":
            shortcut = gate(shortcut)
        out = self.relu(out + shortcut)
        if pos == "post":
            out = gate(out)
        return out

    def _inner(self, out: Tensor) -> Tensor:
        return self.attention(out) if self.position == "inner" else out


class BasicBlock(_ResidualBlock):
    """Two 3x3 convs (He et al. 2016, Fig. 5 left). The first, which carries
    the stride, is the replaceable 3x3 unit."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, attention: AttentionSpec | None = None,
                 *, groups: int = 1, base_width: int = 64, shortcut: str = "B", stride_on: str = "3x3",
                 where: str = "block", in_size: int | None = None, out_size: int | None = None) -> None:
        super().__init__()
        spec = attention or AttentionSpec()
        out = width
        self.in_channels, self.out_channels = in_channels, out
        is_conv = self._set_attention(
            spec, {"pre": in_channels, "inner": out, "standard": out, "identity": out, "post": out}, where, in_size, out_size)
        self.conv1, self.bn1, self.act1 = self._conv_unit(spec, is_conv, in_channels, out, stride, 1, where,
                                                           in_size)
        self.conv2, self.bn2 = conv3x3(out, out), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(shortcut, in_channels, out, stride, where)

    def _residual(self, x: Tensor) -> Tensor:
        out = self._inner(self.act1(self.bn1(self.conv1(x))))
        return self.bn2(self.conv2(out))

    @property
    def last_bn(self) -> nn.Module:
        return self.bn2


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4 (He et al. 2016,
    Fig. 5 right). The stride sits on the 3x3 (torchvision) or on the first
    1x1 (original Caffe ResNet), per ``stride_on``. The 3x3 is the
    replaceable unit."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, attention: AttentionSpec | None = None,
                 *, groups: int = 1, base_width: int = 64, shortcut: str = "B", stride_on: str = "3x3",
                 where: str = "block", in_size: int | None = None, out_size: int | None = None) -> None:
        super().__init__()
        spec = attention or AttentionSpec()
        mid = int(width * base_width / 64) * groups
        out = width * self.expansion
        self.in_channels, self.out_channels = in_channels, out
        is_conv = self._set_attention(
            spec, {"pre": in_channels, "inner": mid, "standard": out, "identity": out, "post": out}, where, in_size, out_size)
        stride_1x1, stride_3x3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        self.conv1, self.bn1 = conv1x1(in_channels, mid, stride_1x1), nn.BatchNorm2d(mid)
        self.conv2, self.bn2, self.act2 = self._conv_unit(
            spec, is_conv, mid, mid, stride_3x3, groups, where, out_size if stride_on == "1x1" else in_size)
        self.conv3, self.bn3 = conv1x1(mid, out), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(shortcut, in_channels, out, stride, where)

    def _residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self._inner(self.act2(self.bn2(self.conv2(out))))
        return self.bn3(self.conv3(out))

    @property
    def last_bn(self) -> nn.Module:
        return self.bn3


BLOCKS: dict[str, type[_ResidualBlock]] = {"basic": BasicBlock, "bottleneck": Bottleneck}

__all__ = ["BasicBlock", "Bottleneck", "BLOCKS", "PadShortcut", "conv1x1", "conv3x3", "build_attention"]
