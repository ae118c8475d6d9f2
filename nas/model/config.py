"""The architecture config: the one contract between search space, model
builder and exported file.

An :class:`ArchConfig` spells out a whole network: stem, block type, and for
every stage its width, stride and the list of its blocks, each with its
attention spec. It is explicit on purpose: what the YAML says is exactly what
:func:`nas.build_model` builds, with no preset logic in between.

* ``to_yaml`` / ``from_yaml`` round-trip exactly (``from_yaml(c.to_yaml()) == c``).
* :func:`structure_hash` hashes the canonical form: attention hyper-parameters
  filled in with their defaults, parameters a module does not use dropped, and
  labels (``backbone``, ``meta``) left out. Two configs with the same hash
  build the same network.
* Every invalid value raises :class:`~nas.errors.ConfigError` with a one-line
  message naming the key path (``stages[1].blocks[0].attention.r``) and what
  is allowed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import attention as _attention
from ..errors import ConfigError

#: Where a gate-type attention module sits in a residual block (SE paper,
#: arXiv 1709.01507, sec. 6.5 and Fig. 5):
#: ``standard`` after the last BN of the residual branch, before the addition;
#: ``pre`` on the residual branch's input, before its first conv;
#: ``post`` after the addition and the final ReLU;
#: ``identity`` on the shortcut branch, in parallel with the residual branch;
#: ``inner`` right after the 3x3 conv unit (conv + BN + ReLU).
POSITIONS = ("standard", "pre", "post", "identity", "inner")
BLOCK_TYPES = ("basic", "bottleneck")
STEMS = ("cifar", "imagenet")
#: ``A``: parameter-free identity shortcut, zero-padded channels and strided
#: subsampling where the shape changes (He et al. 2016, sec. 4.2, used for the
#: CIFAR ResNets); ``B``: 1x1 conv + BN projection where the shape changes.
SHORTCUTS = ("A", "B")
#: Which conv of a bottleneck carries a stage's stride: ``3x3`` as torchvision
#: ("ResNet v1.5"), or ``1x1``, the first 1x1 conv, as the original Caffe
#: ResNet that the SE, CBAM and BAM papers count their FLOPs on.
STRIDE_ON = ("3x3", "1x1")
CONFIG_VERSION = 1


# --------------------------------------------------------------------------- specs


@dataclass
class AttentionSpec:
    """Which attention module a block (or stage transition) uses.

    ``position`` only matters for gate-type modules; ``params`` holds the
    module's hyper-parameters (see :func:`nas.attention.attention_defaults`).
    """

    type: str = "none"
    position: str = "standard"
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        # "none" has no position; one written anyway is kept so the round trip stays exact
        if _attention.attention_kind(self.type) == "gate" and (
            self.type != "none" or self.position != "standard"
        ):
            out["position"] = self.position
        out.update(sorted(self.params.items()))
        return out

    def canonical(self) -> dict[str, Any]:
        """Defaults filled in, inactive parameters dropped; a parameter added
        to a module later is left out at its ``legacy_defaults`` value."""
        out = {"type": self.type}
        if self.type == "none":
            return out
        if _attention.attention_kind(self.type) == "gate":
            out["position"] = self.position
        merged = _attention.attention_defaults(self.type)
        merged.update(self.params)
        # A hyper-parameter added to a module after configs existed is left
        # out at the value that computes what the module computed before it,
        # so the structure hash of every earlier config (and of the trials and
        # checkpoints made from it) stays valid.
        legacy = getattr(_attention.module_class(self.type), "legacy_defaults", {})
        out.update(sorted((k, v) for k, v in merged.items() if not (k in legacy and legacy[k] == v)))
        return out


@dataclass
class BlockConfig:
    attention: AttentionSpec = field(default_factory=AttentionSpec)

    def to_dict(self) -> dict[str, Any]:
        return {"attention": self.attention.to_dict()}


@dataclass
class StageConfig:
    """One stage: ``width`` is the block's base width (for bottlenecks the
    output has ``4 * width`` channels), ``stride`` applies to its first block."""

    width: int
    stride: int
    blocks: list[BlockConfig]
    #: optional module placed once after the stage (BAM's stage transitions)
    transition: AttentionSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"width": self.width, "stride": self.stride}
        if self.transition is not None:
            out["transition"] = self.transition.to_dict()
        out["blocks"] = [b.to_dict() for b in self.blocks]
        return out


@dataclass
class ArchConfig:
    """A whole network. See the module docstring."""

    backbone: str
    block: str
    stem: str
    stem_width: int
    stages: list[StageConfig]
    num_classes: int = 10
    input_size: int = 32
    in_channels: int = 3
    groups: int = 1
    base_width: int = 64
    shortcut: str = "B"
    stride_on: str = "3x3"
    #: free-form provenance and metrics (exports write here); not structural
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- derived facts the builder and profiler need
    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    def out_channels(self, stage_index: int) -> int:
        return self.stages[stage_index].width * self.expansion

    def blocks(self):
        """Yield ``(stage_index, block_index, BlockConfig)`` for every block."""
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage.blocks):
                yield s, b, block

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": CONFIG_VERSION,
            "backbone": self.backbone,
            "block": self.block,
            "stem": self.stem,
            "stem_width": self.stem_width,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "in_channels": self.in_channels,
            "groups": self.groups,
            "base_width": self.base_width,
            "shortcut": self.shortcut,
            "stride_on": self.stride_on,
            "stages": [s.to_dict() for s in self.stages],
        }
        if self.meta:
            out["meta"] = self.meta
        return out

    def to_yaml(self) -> str:
        # default_flow_style=None writes innermost mappings on one line, so a
        # block reads as ``- attention: {type: se, position: standard, r: 16}``.
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def from_dict(cls, data: Any) -> "ArchConfig":
        return _parse_arch(data)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> "ArchConfig":
        data = safe_load_yaml(text, source)
        try:
            return _parse_arch(data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    # ---- identity
    def canonical(self) -> dict[str, Any]:
        """The structural content only: what decides the built network."""
        d = self.to_dict()
        for key in ("backbone", "meta", "version"):
            d.pop(key, None)
        d["stages"] = [
            {
                "width": s.width,
                "stride": s.stride,
                "transition": s.transition.canonical() if s.transition else None,
                "blocks": [{"attention": b.attention.canonical()} for b in s.blocks],
            }
            for s in self.stages
        ]
        return d

    def structure_hash(self) -> str:
        return structure_hash(self)


def structure_hash(cfg: ArchConfig) -> str:
    """16 hex digits of SHA-256 over the canonical form (sorted-key JSON), so
    it is the same across runs, machines and key order in the YAML."""
    blob = json.dumps(cfg.canonical(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def safe_load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` (never the unsafe loader), with a syntax error as a
    one-line ConfigError naming the file, line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: malformed YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: malformed YAML: {' '.join(str(exc).split())}") from None


def load_config(path: str | Path) -> ArchConfig:
    """Read and validate an architecture config from a YAML file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    return ArchConfig.from_yaml(text, source=str(p))


# --------------------------------------------------------------------------- parsing
# A small hand-written validator: the schema is tiny, and each error must name
# the exact key path and the allowed values in one line.


def _check_keys(data: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {_type_name(data)}")
    allowed = required + optional
    for key in data:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {_join(where, key)!r}; allowed: {', '.join(allowed)}"
            )
    for key in required:
        if key not in data:
            raise ConfigError(f"missing key {_join(where, key)!r}")
    return data


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _int(data: dict, key: str, where: str, default: Any = None, minimum: int = 1) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{_join(where, key)}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{_join(where, key)}: must be >= {minimum}, got {value}")
    return value


def _choice(data: dict, key: str, where: str, allowed: tuple[str, ...], default: Any = None) -> str:
    value = data.get(key, default)
    if value not in allowed:
        raise ConfigError(f"{_join(where, key)}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _parse_attention(data: Any, where: str) -> AttentionSpec:
    if isinstance(data, str):  # shorthand: ``attention: se``
        data = {"type": data}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping or a type name, got {_type_name(data)}")
    names = tuple(_attention.attention_names())
    type_ = _choice(data, "type", where, names, default="none")
    kind = _attention.attention_kind(type_)
    params = {k: v for k, v in data.items() if k not in ("type", "position")}
    defaults = _attention.attention_defaults(type_)
    for key in params:
        if key not in defaults:
            allowed = ", ".join(["type", "position"] + list(defaults)) if kind == "gate" \
                else ", ".join(["type"] + list(defaults))
            raise ConfigError(f"unknown key {_join(where, key)!r} for attention {type_!r}; allowed: {allowed}")
    if "position" in data and kind != "gate":
        raise ConfigError(
            f"{_join(where, 'position')}: attention {type_!r} is a {kind} module and takes no position"
        )
    position = _choice(data, "position", where, POSITIONS, default="standard")
    for key, value in params.items():
        # null is a value too: ECA's k_size: null means "adaptive" (its default)
        if not (value is None or isinstance(value, (int, float, str, bool, list))) or (
            isinstance(value, list) and not all(isinstance(v, (int, float, str, bool)) for v in value)
        ):
            raise ConfigError(f"{_join(where, key)}: expected null, a scalar or a list of scalars, got {value!r}")
    return AttentionSpec(type=type_, position=position, params=params)


def _parse_arch(data: Any) -> ArchConfig:
    if data is None:
        raise ConfigError("config is empty")
    _check_keys(
        data,
        "",
        required=("block", "stem", "stem_width", "stages"),
        optional=("version", "backbone", "num_classes", "input_size", "in_channels",
                  "groups", "base_width", "shortcut", "stride_on", "meta"),
    )
    version = data.get("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise ConfigError(f"version: {version!r} is not supported; allowed: {CONFIG_VERSION}")
    backbone = data.get("backbone", "custom")
    if not isinstance(backbone, str):
        raise ConfigError(f"backbone: expected a string label, got {backbone!r}")
    meta = data.get("meta", {}) or {}
    if not isinstance(meta, dict):
        raise ConfigError(f"meta: expected a mapping, got {_type_name(meta)}")
    stages_data = data["stages"]
    if not isinstance(stages_data, list) or not stages_data:
        raise ConfigError("stages: expected a non-empty list of stages")
    stages = []
    for i, sd in enumerate(stages_data):
        where = f"stages[{i}]"
        _check_keys(sd, where, required=("width", "stride", "blocks"), optional=("transition",))
        blocks_data = sd["blocks"]
        if not isinstance(blocks_data, list) or not blocks_data:
            raise ConfigError(f"{where}.blocks: expected a non-empty list of blocks")
        blocks = []
        for j, bd in enumerate(blocks_data):
            bwhere = f"{where}.blocks[{j}]"
            bd = {} if bd is None else bd
            _check_keys(bd, bwhere, required=(), optional=("attention",))
            blocks.append(BlockConfig(attention=_parse_attention(bd.get("attention", "none"), f"{bwhere}.attention")))
        transition = None
        if sd.get("transition") is not None:
            transition = _parse_attention(sd["transition"], f"{where}.transition")
            if _attention.attention_kind(transition.type) not in ("transition", "gate"):
                raise ConfigError(f"{where}.transition: {transition.type!r} cannot be a stage transition")
        stride = _int(sd, "stride", where)
        if stride not in (1, 2):
            raise ConfigError(f"{where}.stride: {stride} is not one of 1, 2")
        stages.append(StageConfig(width=_int(sd, "width", where), stride=stride, blocks=blocks,
                                  transition=transition))
    cfg = ArchConfig(
        backbone=backbone,
        block=_choice(data, "block", "", BLOCK_TYPES),
        stem=_choice(data, "stem", "", STEMS),
        stem_width=_int(data, "stem_width", ""),
        stages=stages,
        num_classes=_int(data, "num_classes", "", default=10),
        input_size=_int(data, "input_size", "", default=32),
        in_channels=_int(data, "in_channels", "", default=3),
        groups=_int(data, "groups", "", default=1),
        base_width=_int(data, "base_width", "", default=64),
        shortcut=_choice(data, "shortcut", "", SHORTCUTS, default="B"),
        stride_on=_choice(data, "stride_on", "", STRIDE_ON, default="3x3"),
        meta=meta,
    )
    if cfg.groups > 1 and cfg.block != "bottleneck":
        raise ConfigError(f"groups: {cfg.groups} needs block: bottleneck (basic blocks are not grouped)")
    return cfg
