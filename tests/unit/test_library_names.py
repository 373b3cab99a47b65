"""The production code (`shared/`, `services/`, `sarafan/`) uses FastStream and nats-py through
their public names only, so a minor release of either cannot break it silently: no module path
of theirs outside the public ones below, no private method overridden in a subclass of theirs,
no class swapped and no annotations rewritten at run time (docs/patterns.md, 8)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from tests.unit.sources import ROOT, nodes, parsed, production

LIBRARIES = ("faststream", "nats")
#: The modules of theirs the code may import from: the packages' documented entry points.
PUBLIC_MODULES = {
    "faststream",
    "faststream.nats",
    "faststream.specification",
    "nats",
    "nats.aio.client",
    "nats.aio.msg",
    "nats.errors",
    "nats.js.api",
    "nats.js.errors",
}


def _trees() -> Iterator[tuple[str, ast.Module]]:
    for path in production():
        yield str(path.relative_to(ROOT)), parsed(path)


def _library_module(name: str | None) -> bool:
    return bool(name) and str(name).split(".")[0] in LIBRARIES


def _imported_names(tree: ast.Module) -> set[str]:
    """The names a module binds from the libraries (`from faststream.nats import NatsBroker`)."""
    names: set[str] = set()
    for node in nodes(tree):
        if isinstance(node, ast.ImportFrom) and _library_module(node.module):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _base_name(base: ast.expr) -> str:
    return base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")


def _at(where: str, node: ast.AST) -> str:
    return f"{where}:{getattr(node, 'lineno', 0)}"


def _findings(where: str, tree: ast.Module) -> Iterator[str]:
    from_library = _imported_names(tree)
    for node in nodes(tree):
        if isinstance(node, ast.ImportFrom) and _library_module(node.module):
            if node.module not in PUBLIC_MODULES:
                yield f"{_at(where, node)} imports from {node.module}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _library_module(alias.name) and alias.name not in PUBLIC_MODULES:
                    yield f"{_at(where, node)} imports {alias.name}"
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if node.attr in ("__class__", "__annotations__"):
                yield f"{_at(where, node)} assigns .{node.attr}"
        elif isinstance(node, ast.ClassDef) and any(
            _base_name(b) in from_library for b in node.bases
        ):
            for item in node.body:
                name = getattr(item, "name", "")
                if name.startswith("_") and not name.startswith("__"):
                    yield f"{_at(where, node)} {node.name} overrides {name}"


def test_production_code_uses_only_public_faststream_and_nats_py_names() -> None:
    found = [finding for where, tree in _trees() for finding in _findings(where, tree)]
    assert not found, "library internals used:\n" + "\n".join(found)
