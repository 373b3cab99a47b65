"""The size limits CONTRIBUTING states, checked on the production code (`shared/`, `services/`,
`sarafan/`): no function or method over 60 lines (decorators and docstring included), no module
over 400. A unit that grows past them is split where it has two jobs, not wrapped to fit."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.unit.sources import ROOT, nodes, parsed, production, text

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _modules() -> Iterator[Path]:
    yield from production()


def _functions(tree: ast.Module) -> Iterator[tuple[str, int, int]]:
    """(name, first line, lines) of every function and method, nested ones included."""
    for node in nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            yield node.name, first, (node.end_lineno or node.lineno) - first + 1


def test_no_production_function_is_over_60_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{line} {name}: {size} lines"
        for path in _modules()
        for name, line, size in _functions(parsed(path))
        if size > MAX_FUNCTION_LINES
    ]
    assert not long, f"over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_no_production_module_is_over_400_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}: {size} lines"
        for path in _modules()
        if (size := len(text(path).splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def test_the_check_sees_what_it_measures() -> None:
    source = "@decorator\ndef f():\n" + "    x = 1\n" * 70
    [(name, first, size)] = list(_functions(ast.parse(source)))
    assert (name, first, size) == ("f", 1, 72)
    assert sum(1 for _ in _modules()) > 100
