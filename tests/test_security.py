"""Security rules of issue 6 item 7: YAML and checkpoints are read without
running code, passwords never reach logs, user attrs or exports, and the
dashboard listens on loopback unless told otherwise."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import nas
from nas.cli import build_parser
from nas.errors import NasError
from nas.model.checkpoint import load_checkpoint
from nas.search.space import parse_space

PACKAGE = Path(nas.__file__).parent
EVIL_YAML = "backbone: !!python/object/apply:os.system ['echo pwned']\n"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Name):
            yield node.func.value.id, node.func.attr, node


def test_source_uses_only_safe_loaders():
    for path in PACKAGE.rglob("*.py"):
        for owner, attr, node in _calls(ast.parse(path.read_text())):
            where = f"{path.name}:{node.lineno}"
            assert not (owner == "yaml" and attr in ("load", "unsafe_load", "full_load", "load_all")), where
            if owner == "torch" and attr == "load":
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, where


def test_yaml_with_python_tags_is_refused(tmp_path):
    with pytest.raises(NasError, match="malformed YAML|could not determine a constructor"):
        parse_space(EVIL_YAML, name="evil")
    cfg_file = tmp_path / "evil.yaml"
    cfg_file.write_text(EVIL_YAML)
    with pytest.raises(NasError):
        nas.load_config(cfg_file)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "state_dict": {}, "x": _Payload()}, path)
    with pytest.raises(NasError, match="cannot load checkpoint"):
        load_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


def test_dashboard_binds_loopback_by_default():
    args = build_parser().parse_args(["dashboard"])
    assert args.host == "127.0.0.1"
