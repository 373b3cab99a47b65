"""The three layers of the repository and which way their imports go (read from the source).

`shared/` is the runtime kernel: it imports neither a service nor the tools. A service
(`services/<name>/`) imports the kernel and its own modules: no other service, not the tools,
and it reaches NATS through the bus's methods, never `bus.js`. The tools (`sarafan/`) may import
anything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from shared import topology
from tests.unit.sources import ROOT, nodes, parsed, paths

TOOLS = ("cli", "supervisor", "embedded", "home_secrets", "ops", "demo", "catalogue", "nats_auth")


def _modules(package: str) -> Iterator[tuple[Path, ast.Module]]:
    for path in paths(package):
        yield path, parsed(path)


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import, function-level ones included; `from a
    import b` yields `a.b` too, since b may be a module."""
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rpartition(".")[0]
    for node in nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def _where(path: Path, line: int, name: str) -> str:
    return f"{path.relative_to(ROOT)}:{line}: {name}"


def test_the_kernel_imports_no_service_and_no_tool():
    wrong = [
        _where(path, line, name)
        for path, tree in _modules("shared")
        for line, name in _imports(path, tree)
        if _under(name, "services") or _under(name, "sarafan")
    ]
    assert not wrong, "shared/ is the kernel; it may not import:\n" + "\n".join(wrong)


def test_a_service_imports_no_other_service_and_no_tool():
    wrong = []
    for path, tree in _modules("services"):
        own = _dotted(path).split(".")[:2]  # services.<name>
        for line, name in _imports(path, tree):
            other_service = (
                _under(name, "services")
                and name != "services"
                and name.split(".")[:2] != own
                and len(own) == 2
            )
            if other_service or _under(name, "sarafan"):
                wrong.append(_where(path, line, name))
    assert not wrong, "a service imports only shared/ and itself:\n" + "\n".join(wrong)


def _is_bus_js(node: ast.AST) -> bool:
    """`<...>.bus.js` or `bus.js`: the raw JetStream context behind the bus."""
    if not (isinstance(node, ast.Attribute) and node.attr == "js"):
        return False
    owner = node.value
    return (isinstance(owner, ast.Attribute) and owner.attr in {"bus", "_bus"}) or (
        isinstance(owner, ast.Name) and owner.id in {"bus", "_bus"}
    )


def test_no_service_reaches_past_the_bus_to_its_jetstream_context():
    wrong = [
        _where(path, node.lineno, ast.unparse(node))
        for path, tree in _modules("services")
        for node in nodes(tree)
        if _is_bus_js(node)
    ]
    assert not wrong, "use the bus's methods (erase, ensure_streams, key_value):\n" + "\n".join(
        wrong
    )


def test_the_operator_tools_live_in_sarafan_not_in_the_kernel():
    for name in TOOLS:
        assert (ROOT / "sarafan" / f"{name}.py").is_file(), name
        assert not (ROOT / "shared" / f"{name}.py").exists(), f"shared/{name}.py is a tool"


def test_the_topology_lists_each_service_once_with_its_port_stream_and_package():
    services = set(topology.SERVICES)
    assert len(services) == len(topology.SERVICES)
    assert services == set(topology.PORTS) == set(topology.STREAMS)
    assert len(set(topology.PORTS.values())) == len(services)
    assert topology.DLQ_STREAM not in topology.STREAMS.values()
    on_disk = {p.parent.name for p in (ROOT / "services").glob("*/__init__.py")}
    assert on_disk == services
    for service, streams in topology.EXTRA_STREAMS.items():
        assert service in services and set(streams) <= set(topology.STREAMS.values())
    assert topology.ERASURE_OWNER in services
