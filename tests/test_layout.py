"""The package's layering (docs/design.md section 2): sub-packages stacked in
one order, imports only downward, no import loop, and no import inside a
function except a marked lazy load of a heavy module."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nas"

#: bottom to top; a module may import its own layer (without a loop) and the layers below
LAYERS = (
    ("nas.errors", "nas.provenance", "nas.device"),
    ("nas.kernels",),
    ("nas.storage",),
    ("nas.attention",),
    ("nas.model",),
    ("nas.training",),
    ("nas.search",),
    ("nas.report",),
    ("nas.workflows",),
    ("nas.cli", "nas"),  # the command line, and the public API in nas/__init__.py
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix != "nas":
                best = index
    if best is None and module == "nas":
        best = len(LAYERS) - 1
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool, str]]:
    """(imported nas module, line, inside a function, the line's text) for every import of ``path``."""
    text = path.read_text()
    tree = ast.parse(text)
    lines = text.splitlines()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.append(sub if sub in modules else source)
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            inner = id(node) in in_function
            statement = "\n".join(lines[node.lineno - 1:node.end_lineno])
            if (target in modules and target != module) or inner:
                found.append((target, node.lineno, inner, statement))
    return found


def test_every_import_goes_down_the_layers():
    modules = _modules()
    upward = []
    for module, path in modules.items():
        for target, line, _, _ in _imports(module, path, modules):
            if target in modules and _layer(target) > _layer(module):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {target}")
    assert upward == []


def test_no_import_loop():
    modules = _modules()
    graph = {m: {t for t, *_ in _imports(m, p, modules) if t in modules} for m, p in modules.items()}
    state: dict[str, int] = {}
    loops = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                loops.append(" -> ".join(stack[stack.index(t):] + [m, t]) if t in stack else f"{m} -> {t}")
            elif t not in state:
                visit(t, stack + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert loops == []


def test_function_level_imports_are_marked_lazy_loads():
    """An import inside a function is a deliberate lazy load of a heavy
    module (marked ``# lazy: why`` on its line), never a way round a loop."""
    modules = _modules()
    unmarked = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text.strip()}"
                for module, path in modules.items()
                for _, line, inner, text in _imports(module, path, modules)
                if inner and "# lazy:" not in text]
    assert unmarked == []


def test_the_layers_cover_every_module():
    for module in _modules():
        _layer(module)  # asserts
    with pytest.raises(AssertionError):
        _layer("nas_other.thing")


def test_every_module_imports_in_a_fresh_interpreter_in_reverse_dependency_order():
    """Every module of nas, dependents before what they depend on (the CLI
    first, the errors last), in one fresh interpreter: a loop hidden from the
    static test (an import built at run time) fails here."""
    modules = _modules()
    graph = {m: {t for t, *_ in _imports(m, p, modules) if t in modules} for m, p in modules.items()}
    order: list[str] = []  # dependencies first
    done: set[str] = set()

    def place(m: str) -> None:
        if m in done:
            return
        done.add(m)
        for t in sorted(graph[m]):
            place(t)
        order.append(m)

    for m in sorted(graph):
        place(m)
    order.reverse()
    assert order.index("nas.cli") < order.index("nas.search.run") < order.index("nas.errors")
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint(len(sys.argv) - 1)\n"
    out = subprocess.run([sys.executable, "-c", script, *order], capture_output=True, text=True,
                         cwd=PACKAGE.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(len(modules))]


def test_one_version_number():
    import tomllib

    import nas
    from nas.provenance import __version__, versions

    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "nas.provenance.__version__"}
    assert nas.__version__ == __version__ == versions()["nas"]
