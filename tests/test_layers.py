"""The layers point down only: every import of every module of ``src/dragkit`` (top-level, inside functions, relative
or absolute) is read from its source and checked against the order

    core → utils → parts → engines → methods → pipelines → bench → interfaces

A module may import its own layer and the layers before it, never one after it. The independent measures
(``bench/metrics``) may read no method and no pipeline: what they measure must not depend on what made the edit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dragkit"
LAYERS = ["core", "utils", "parts", "engines", "methods", "pipelines", "bench", "interfaces"]
RANK = {name: i for i, name in enumerate(LAYERS)}
TOP = len(LAYERS)  # the package itself (the public API) and ``python -m dragkit`` sit above everything
METRICS_MAY_NOT = ("dragkit.methods", "dragkit.pipelines", "dragkit.interfaces", "dragkit.bench.runner")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__", "models"):
        return TOP
    if parts[1] not in RANK:
        raise AssertionError(f"{module}: not in any layer {LAYERS}; put it in one")
    return RANK[parts[1]]


def imports_of(path: Path, me: str | None = None) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every dragkit import in the file of module ``me`` (``from x import name``
    counts ``x.name`` when that is a module, so ``from .. import engines`` is an import of ``dragkit.engines``)."""
    me = me or module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = []
    tree = TREES[path] if path in TREES else ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("dragkit"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (SRC.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                    SRC.parent / Path(*sub.split("."))
                ).is_dir()
                found.append((node.lineno, sub if is_module else target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("dragkit")]
    return found


FILES = sorted(SRC.rglob("*.py"))
# parsed once, while the tests are collected: no server thread of another test is printing a traceback then
TREES = {path: ast.parse(path.read_text(), str(path)) for path in FILES}


def test_every_module_is_in_a_layer():
    assert FILES
    for path in FILES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path):
    me = module_name(path)
    mine = layer_of(me)
    wrong = []
    for line, target in imports_of(path):
        if layer_of(target) > mine:
            wrong.append(f"line {line}: {me} ({LAYERS[mine]}) imports {target} ({LAYERS[layer_of(target)]})")
        if me.startswith("dragkit.bench.metrics") and target.startswith(METRICS_MAY_NOT):
            wrong.append(f"line {line}: the independent measures import {target}")
    assert not wrong, "imports pointing up:\n" + "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule itself: a core module importing a pipeline, even inside a function, is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..pipelines import load_pipeline\n    from .. import methods\n")
    found = imports_of(probe, "dragkit.core.probe")
    assert found == [(2, "dragkit.pipelines"), (3, "dragkit.methods")]
    assert all(layer_of(target) > RANK["core"] for _, target in found)
