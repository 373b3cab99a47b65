"""The production code (`shared/`, `services/`, `sarafan/`) as the source checks read it (import
directions, size limits, library names): each module parsed once a run and its nodes listed
once, shared by the checks. The checks only read the trees, never change them."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("shared", "services", "sarafan")


@cache
def paths(package: str) -> tuple[Path, ...]:
    """The modules of `package` (a directory under the repository root), sorted."""
    return tuple(sorted((ROOT / package).rglob("*.py")))


def production() -> Iterator[Path]:
    """Every production module: `shared/`, then `services/`, then `sarafan/`."""
    for package in PRODUCTION:
        yield from paths(package)


@cache
def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@cache
def parsed(path: Path) -> ast.Module:
    """The syntax tree of the module at `path`."""
    return ast.parse(text(path), filename=str(path))


@cache
def nodes(tree: ast.AST) -> tuple[ast.AST, ...]:
    """Every node of `tree`, in the order `ast.walk` gives them."""
    return tuple(ast.walk(tree))
