"""Property test: whatever a shipped space samples builds, trains (one
forward and backward pass) and has a cost.

Hypothesis drives ``SearchSpace.sample`` through a stand-in for
``optuna.Trial`` whose ``suggest_categorical`` draws from the offered
choices, so every conditional branch of every space gets exercised.
``NAS_PROPERTY_EXAMPLES`` sets the number of architectures per space
(default 30, ~0.2 s each on a 2-core CPU; set it higher for a deeper run).
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas import build_model
from nas import profile
from nas.search.space import load_space, space_names

EXAMPLES = int(os.environ.get("NAS_PROPERTY_EXAMPLES", "30"))


class _DrawingTrial:
    """Just enough of ``optuna.Trial`` for ``SearchSpace.sample``."""

    def __init__(self, draw) -> None:
        self._draw = draw
        self.params: dict = {}

    def suggest_categorical(self, name, choices):
        value = self._draw(st.sampled_from(list(choices)), label=name)
        self.params[name] = value
        return value


@pytest.mark.parametrize("name", space_names())
def test_every_sample_builds_trains_and_has_a_cost(name):
    space = load_space(name)
    x = torch.randn(2, 3, 32, 32)
    y = torch.tensor([0, 1])

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def check(data):
        trial = _DrawingTrial(data.draw)
        cfg = space.sample(trial, num_classes=10)
        torch.manual_seed(0)
        model = build_model(cfg)
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert torch.isfinite(loss), trial.params
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), trial.params
        cost = profile(model, 32)
        assert cost["macs"] > 0 and cost["params"] > 0, trial.params
        # what was sampled is what was built: the config round-trips through YAML unchanged
        assert type(cfg).from_yaml(cfg.to_yaml()).structure_hash() == cfg.structure_hash()

    check()
