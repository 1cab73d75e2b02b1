"""The tree keeps its shape: imports point down the layers, and no module, class or function
outgrows what one sitting can read (the limits of the shape issue)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import syncd

PACKAGE = Path(syncd.__file__).parent

# core (with errors, settings, metrics) < local, remote < transfer < reconcile < app
LAYERS = {
    "core": 0,
    "errors": 0,
    "settings": 0,
    "config_problems": 0,
    "environment": 0,
    "units": 0,
    "hook_settings": 0,
    "metrics": 0,
    "__init__": 0,
    "local": 1,
    "remote": 1,
    "pyfunc": 1,
    "transfer": 2,
    "reconcile": 3,
    "app": 4,
    "publish": 4,
    "__main__": 4,
}
DECLARATIONS = {"metrics.py"}  # a long list of metric declarations, not logic
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 400, 250, 60


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(relative.parts)


def imported(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("syncd"):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("syncd")]
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    here = layer_of(module_name(path))
    for line, target in imported(ast.parse(path.read_text())):
        there = layer_of(target)
        if there == "" or target == "syncd":
            continue  # `from syncd import __version__`
        assert LAYERS[there] <= LAYERS[here], (
            f"{path.relative_to(PACKAGE)}:{line} ({here}) imports {target} ({there}), a layer above"
        )
        if LAYERS[there] == LAYERS[here] == 1:
            assert there == here, f"{path.relative_to(PACKAGE)}:{line}: local and remote are peers"


def test_nothing_outgrows_a_sitting() -> None:
    too_big = []
    for path in modules():
        source = path.read_text()
        name = str(path.relative_to(PACKAGE))
        lines = len(source.splitlines())
        if lines > MAX_MODULE and path.name not in DECLARATIONS:
            too_big.append(f"module {name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                length = (node.end_lineno or 0) - node.lineno + 1
                if length > MAX_CLASS:
                    too_big.append(f"class {name}:{node.name}: {length} lines")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or 0) - node.lineno + 1
                if length > MAX_FUNCTION and not (
                    path.name in DECLARATIONS and node.name == "__init__"
                ):
                    too_big.append(f"function {name}:{node.name}: {length} lines")
    assert not too_big, "\n".join(too_big)
