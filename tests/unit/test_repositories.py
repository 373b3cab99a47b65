"""The unit of work owns the repositories (docs/patterns.md, section 1): in `services/`, only a
repository (a subclass of `shared.uow.Repository`) stages writes with the kernel's write calls,
and nothing else takes the kernel's `UnitOfWork` to write through it. Use cases reach the writes
as `uow.<repository>.<method>(...)`."""

from __future__ import annotations

import ast

from tests.unit.sources import ROOT, nodes, parsed, paths, text

#: The kernel's staging calls (shared/uow.py `UnitOfWork`).
WRITE_CALLS = frozenset(
    {
        "insert",
        "update",
        "find_one_and_update",
        "bulk",
        "insert_many",
        "delete",
        "update_many",
        "replace",
    }
)


def _repositories(tree: ast.Module) -> set[str]:
    """The module's classes derived from `Repository`, directly or through one of its own."""
    known = {"Repository"}
    classes = [n for n in nodes(tree) if isinstance(n, ast.ClassDef)]
    grew = True
    while grew:
        grew = False
        for cls in classes:
            if cls.name not in known and any(
                isinstance(b, ast.Name) and b.id in known for b in cls.bases
            ):
                known.add(cls.name)
                grew = True
    return known


def _is_uow(node: ast.expr) -> bool:
    """`uow` or `self.uow` (or any `<x>.uow`): a unit of work, not a repository of it."""
    if isinstance(node, ast.Name):
        return node.id == "uow"
    return isinstance(node, ast.Attribute) and node.attr == "uow"


def stray_writes(tree: ast.Module, where: str) -> list[str]:
    """Staging calls on a unit of work made outside a repository, and parameters typed as the
    kernel's `UnitOfWork` outside a repository's constructor: one line each."""
    found: list[str] = []
    repositories = _repositories(tree)

    def visit(node: ast.AST, in_repository: bool, function: str | None) -> None:
        if isinstance(node, ast.ClassDef):
            in_repository = node.name in repositories
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
            for arg in [*node.args.args, *node.args.kwonlyargs]:
                typed = arg.annotation
                if isinstance(typed, ast.Name) and typed.id == "UnitOfWork":
                    if not (in_repository and node.name == "__init__"):
                        found.append(f"{where}:{node.lineno} {node.name}({arg.arg}: UnitOfWork)")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in WRITE_CALLS
            and _is_uow(node.func.value)
            and not in_repository
        ):
            found.append(f"{where}:{node.lineno} uow.{node.func.attr}(...) in {function}")
        for child in ast.iter_child_nodes(node):
            visit(child, in_repository, function)

    visit(tree, False, None)
    return found


def test_only_repositories_stage_writes_in_a_unit_of_work():
    found = []
    for path in paths("services"):
        if "uow" in text(path) or "UnitOfWork" in text(path):  # the others cannot stage
            found += stray_writes(parsed(path), str(path.relative_to(ROOT)))
    assert not found, "writes staged outside a repository:\n" + "\n".join(found)


def test_the_check_finds_a_store_that_is_handed_a_unit_of_work():
    """The shape every store had before the unit of work owned the repositories."""
    before = ast.parse(
        "class MemberStore:\n"
        "    def insert(self, uow: UnitOfWork, member, events):\n"
        "        return uow.insert(self.members, member, events)\n"
        "class OfStore(Repository):\n"
        "    pass\n"
        "class MembersRepository(OfStore):\n"
        "    def __init__(self, uow: UnitOfWork, store):\n"
        "        self.uow = uow\n"
        "    def insert(self, member, events):\n"
        "        return self.uow.insert(self.store.members, member, events)\n"
        "async def use_case(uow):\n"
        "    uow.members.insert({}, [])\n"
    )
    assert stray_writes(before, "m.py") == [
        "m.py:2 insert(uow: UnitOfWork)",
        "m.py:3 uow.insert(...) in insert",
    ]


def test_every_service_has_a_unit_of_work_owning_repositories():
    for service in ("members", "engagement", "campaigns", "notifier", "activities"):
        owners = [
            node
            for path in paths(f"services/{service}")
            if "UnitOfWork" in text(path)
            for node in nodes(parsed(path))
            if isinstance(node, ast.ClassDef)
            and any(isinstance(b, ast.Name) and b.id == "UnitOfWork" for b in node.bases)
        ]
        assert len(owners) == 1, f"{service}: {len(owners)} unit of work classes"
        (owner,) = owners
        init = next(n for n in owner.body if isinstance(n, ast.FunctionDef))
        owned = [n for n in ast.walk(init) if isinstance(n, ast.AnnAssign)]
        assert owned, f"{service}'s {owner.name} owns no repository"
