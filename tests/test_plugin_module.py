"""A module's facts live in its own class: an attention module defined here,
outside the package, registered through the public call, goes through every
stage of the data flow (docs/design.md section 2) with nothing else changed:
a search space read from YAML text, a sampled trial, its paper placement,
the built network, a training step, the YAML round trip and a checkpoint,
format-1 conversion included."""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.attention import (
    AttentionModule,
    PaperPlacement,
    StageFacts,
    attention_names,
    largest_divisor,
    module_class,
    register_attention,
    unregister_attention,
)
from nas.errors import ConfigError
from nas.model.checkpoint import load_checkpoint, save_checkpoint
from nas.model.config import ArchConfig
from nas.search.space import parse_space

NAME = "slice_scale"


class SliceScale(AttentionModule):
    """x times a learnable per-channel scale; the channels are cut into
    ``parts`` slices whose scales start at ``levels[i] * gain / 4``:
    ``levels`` has one entry per part, so its length follows ``parts``."""

    kind = "gate"
    #: per block after the sum, on resnet20 (this test's "paper"); gain per stage
    paper_placement = PaperPlacement(backbone="resnet20", position="post", per_stage={"gain": (1, 2, 3)})
    #: gain is chosen after the other scalars, whatever order a space file lists them in
    suggest_last = ("gain",)

    def __init__(self, channels: int, *, parts: int = 3, levels: list[int] = (2, 2, 2), gain: int = 1) -> None:
        super().__init__()
        if not isinstance(parts, int) or parts < 1 or channels % parts:
            raise ValueError(f"{NAME}: parts={parts} must divide channels={channels}")
        if len(levels) != parts:
            raise ValueError(f"{NAME}: levels must have {parts} entries, got {len(levels)}")
        init = torch.tensor([float(v) for v in levels]).repeat_interleave(channels // parts) * gain / 4
        self.scale = nn.Parameter(init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1).to(x.dtype)

    @classmethod
    def fit_to_stage(cls, defaults: dict, overrides: dict, stage: StageFacts) -> dict:
        """More parts in later stages: the largest divisor of the stage's
        channels up to ``parts`` times the stage's number, levels to match."""
        if "parts" in overrides:
            return {}
        parts = largest_divisor(stage.out, defaults["parts"] * (stage.index + 1))
        return {"parts": parts, "levels": [defaults["levels"][0]] * parts}

    @classmethod
    def list_length(cls, name: str, values: dict, defaults: dict) -> int:
        if name == "levels":
            return values.get("parts", defaults["parts"])
        return super().list_length(name, values, defaults)

    @classmethod
    def upgrade_state_format_1(cls, name: str, state: dict) -> bool:
        """Format 1 (in this test's story) stored half the scale."""
        key = f"{name}.scale"
        state[key] = state[key] * 2
        return True


@pytest.fixture
def plugin():
    builtin = attention_names()
    register_attention(NAME, SliceScale)
    try:
        yield SliceScale
    finally:
        unregister_attention(NAME)
    assert attention_names() == builtin


SPACE = textwrap.dedent(f"""\
    description: the plugin module alone, in every stage
    backbone: resnet20
    stages: [1, 2, 3]
    types: [{NAME}]
    params:
      {NAME}:
        gain: [1, 2]
        position: [post, standard]
        parts: [2, 4]
        levels: {{choices: [1, 2, 3], per_block: true}}
    fidelity: {{dataset: cifar10, subset: 1000, val_size: 500, rungs: [1]}}
    """)


def _slices(cfg):
    return [b.attention for s in cfg.stages for b in s.blocks if b.attention.type == NAME]


def _train_one_step(model):
    torch.manual_seed(0)
    model.train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss)


def test_registration_is_public_and_reversible(plugin):
    assert NAME in attention_names() and module_class(NAME) is SliceScale
    assert nas.attention.attention_defaults(NAME) == {"parts": 3, "levels": (2, 2, 2), "gain": 1}
    with pytest.raises(TypeError, match="AttentionModule"):
        register_attention("plain", nn.Identity)
    assert "plain" not in attention_names()


def test_plugin_through_space_trial_build_training_yaml_and_checkpoint(plugin, tmp_path):
    # the space file: its list parameter's length follows parts (the class's
    # list_length; the module's default length, 3, fits neither 2 nor 4, so
    # the load-time check would refuse the space otherwise)
    space = parse_space(SPACE, name="plugin")
    assert space.stage_types == {1: [NAME], 2: [NAME], 3: [NAME]}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_parts = set()
    for _ in range(4):
        trial = study.ask()
        cfg = space.sample(trial)
        specs = _slices(cfg)
        assert len(specs) == 9  # every block of resnet20
        for spec in specs:
            assert len(spec.params["levels"]) == spec.params["parts"]
            seen_parts.add(spec.params["parts"])
        # gain (listed first in the file) is chosen after parts: suggest_last
        names = list(trial.params)
        assert names.index("s1.slice_scale.parts") < names.index("s1.slice_scale.gain")
        study.tell(trial, 0.0)
    assert seen_parts == {2, 4}

    # the paper placement and the fitting to each stage come from the class
    paper = nas.paper_config("resnet20", NAME)
    assert paper.backbone == f"resnet20+{NAME}"
    for s, stage in enumerate(paper.stages):
        parts = [2, 4, 8][s]  # largest divisor of 16, 32, 64 up to 3, 6, 9
        for block in stage.blocks:
            assert block.attention.position == "post"
            assert block.attention.params == {"gain": s + 1, "parts": parts, "levels": [2] * parts}
    assert nas.paper_config("resnet20", NAME, parts=1, levels=[3]).stages[2].blocks[0].attention.params == \
        {"gain": 3, "parts": 1, "levels": [3]}
    # on another backbone the per-stage values of the paper's own are not taken
    assert "gain" not in nas.paper_config("resnet32", NAME).stages[0].blocks[0].attention.params

    for cfg in (paper, space.sample(optuna.trial.FixedTrial(dict(study.trials[0].params)))):
        model = nas.build_model(cfg)
        gates = [m for m in model.modules() if isinstance(m, SliceScale)]
        assert len(gates) == 9
        before = [g.scale.detach().clone() for g in gates]
        _train_one_step(model)
        assert any(not torch.equal(b, g.scale) for b, g in zip(before, gates))

        # exported and read back: the same architecture, the same network
        path = tmp_path / "arch.yaml"
        cfg.save(path)
        again = nas.load_config(path)
        assert again == cfg and ArchConfig.from_yaml(cfg.to_yaml()) == cfg
        assert again.structure_hash() == cfg.structure_hash()
        assert nas.count_parameters(nas.build_model(again)) == nas.count_parameters(model)

        # a checkpoint of the trained model loads with its weights
        ckpt = tmp_path / "model.pt"
        save_checkpoint(ckpt, model, cfg, (0.5,) * 3, (0.25,) * 3)
        loaded, payload = load_checkpoint(ckpt, again)
        assert payload["structure_hash"] == cfg.structure_hash()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(x), model.eval()(x))

        # a format-1 checkpoint is converted by the module's own hook
        payload = torch.load(ckpt, weights_only=True)
        payload["format"] = 1
        payload["state_dict"] = {k: v / 2 if k.endswith(".scale") else v for k, v in payload["state_dict"].items()}
        torch.save(payload, ckpt)
        converted, _ = load_checkpoint(ckpt)
        with torch.no_grad():
            torch.testing.assert_close(converted.eval()(x), model(x))


def test_a_module_without_a_paper_placement_has_no_paper_config(plugin, monkeypatch):
    monkeypatch.setattr(SliceScale, "paper_placement", None)
    with pytest.raises(ConfigError, match=f"{NAME}.*declares no paper placement"):
        nas.paper_config("resnet20", NAME)


def test_no_module_is_named_outside_its_own_file():
    """Presets, spaces, checkpoints and everything above them ask the module
    class (nas.attention.module_class) and hold no string equal to a
    module's name ("none", the no-attention baseline, aside)."""
    package = Path(nas.__file__).parent
    names = set(attention_names()) - {"none"}
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] in ("attention", "cli", "cli.py"):  # the modules; the command line's own text
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"nas/{relative}:{node.lineno}: {node.value!r}")
    assert found == []
