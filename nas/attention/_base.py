"""What every attention module declares about itself, in its own file.

:class:`AttentionModule` is the base of every registered module. Besides
``kind`` (see :mod:`nas.attention._registry`) a module declares, where it
differs from the defaults here:

* ``paper_placement``: a :class:`PaperPlacement`, how its paper places it in
  its own model (what :func:`nas.paper_config` builds); none by default, and
  then ``paper_config`` refuses the module;
* ``fit_to_stage(defaults, overrides, stage)``: hyper-parameters fitted to
  one stage of a backbone (a group count its paper set for ResNet-50 widths
  cut to a divisor of a small stage's channels); ``stage`` is a
  :class:`StageFacts` of plain numbers, computed by the model layer;
* ``list_length(name, values, defaults)``: how many elements a list
  hyper-parameter gets, given the values chosen before it; a search space
  chooses such a parameter element by element. Scalars are chosen first;
  ``suggest_last`` names parameters chosen after the others of their kind
  (a list whose length another list sets comes after that list);
* ``legacy_defaults``: hyper-parameters added after configs existed, at the
  value that computes what the module computed before (structure hashes
  leave them out there, see :mod:`nas.model.config`);
* ``max_tokens``: the largest H*W the module may see;
  ``check_feature_size(size)``: its own check of the map it reads (a pooling
  rate, a reduction stride, an attention map's size), raising ``ValueError``
  naming the parameter; the block calls it with the side of that map;
* ``upgrade_state_format_1(name, state)``: converts the module's weights in
  a format-1 checkpoint (:mod:`nas.model.checkpoint`) in place, or refuses.

Nothing here knows the layers above: the facts are plain values that those
layers read and pass down.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn


@dataclass(frozen=True)
class PaperPlacement:
    """How a module's paper places it in its own ResNet-50-class model."""

    #: the backbone preset the paper reports on; None where the paper had no
    #: such backbone (a head on top of one, a transformer's block)
    backbone: str | None = None
    #: which conv carries a bottleneck stage's stride in the paper's FLOP
    #: count (nas.model.config.STRIDE_ON); applied on the paper's own backbone,
    #: or on any bottleneck backbone where ``backbone`` is None
    stride_on: str = "3x3"
    #: the block position of a gate
    position: str = "standard"
    #: hyper-parameters set at every stage
    params: Mapping[str, Any] = field(default_factory=dict)
    #: hyper-parameters per stage (one value per stage, first stage first),
    #: applied on the paper's own backbone only
    per_stage: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    #: only after the network's last block, not in every block
    last_block_only: bool = False


@dataclass(frozen=True)
class StageFacts:
    """One stage of a backbone, as a module fits its hyper-parameters to it."""

    index: int  # 0-based
    width: int  # the stage's base width
    #: channels of the block's replaceable 3x3 conv unit; on a basic block
    #: also a divisor of the unit's input (the previous stage's output in the
    #: stage's first block), so a group count dividing it fits both
    mid: int
    out: int  # the stage's output channels
    groups: int  # the backbone's cardinality (32 on ResNeXt-50 32x4d, else 1)
    feature_size: int  # side of the stage's output map


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` not above ``at_most`` (at least 1)."""
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


class AttentionModule(nn.Module):
    """Base of every attention module: the facts a module declares, with
    their defaults (see the module docstring)."""

    #: "gate", "conv" or "transition" (nas.attention._registry); required
    kind: ClassVar[str]
    paper_placement: ClassVar[PaperPlacement | None] = None
    legacy_defaults: ClassVar[Mapping[str, Any]] = {}
    max_tokens: ClassVar[int | None] = None
    suggest_last: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def fit_to_stage(cls, defaults: Mapping[str, Any], overrides: Mapping[str, Any],
                     stage: StageFacts) -> dict[str, Any]:
        """Hyper-parameters fitted to ``stage`` where the paper's do not fit
        it; ``defaults`` are the module's, ``overrides`` what the caller set
        (left alone). On the paper's own backbone nothing should change."""
        return {}

    @classmethod
    def list_length(cls, name: str, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> int:
        """Elements of list hyper-parameter ``name`` given ``values``, the
        parameters chosen before it: by default its default's length."""
        return len(defaults[name] or ())

    @classmethod
    def upgrade_state_format_1(cls, name: str, state: dict) -> bool:
        """Convert this module's weights (keys ``name + "."``) in ``state``,
        saved as checkpoint format 1, in place; False where no conversion
        gives what the module computes now (the checkpoint is refused)."""
        return True

    def check_feature_size(self, size: int) -> None:
        """Raise ``ValueError`` where a ``size`` x ``size`` map does not fit
        the module's hyper-parameters."""
