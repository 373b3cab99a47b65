"""Every query the services send during the tests, and whether the server can answer it from an
index — the test-suite version of MongoDB's `notablescan` (docs/patterns.md, "Queries that stay
fast").

PyMongo's command monitoring records each command as it is sent; a command counts as the
services' own when the code that issued it lies in `services/` or `shared/` (walking the Python
stack, so a test's own reads and the conformance suite's deliberate odd filters are left out).
Each distinct filter *shape* (field names and operators, values replaced by their types) is
explained once at the end: nx-27017 answers with SQLite's plan (`SCAN <collection>` is a full
scan, `SEARCH … USING INDEX` is not), MongoDB with its stages (`COLLSCAN`).

nx-27017 explains the filter only (not the sort), so a sort the index does not serve is not
caught here on the embedded server; on MongoDB an in-memory `SORT` shows in the plan.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from shared.topology import SERVICES

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (str(ROOT / "services") + "/", str(ROOT / "shared") + "/")
TESTS = str(ROOT / "tests") + "/"
#: Files of the kernel that are tools, not services (the embedded stack's readiness pings).
NOT_SERVICE = (str(ROOT / "shared" / "embedded.py"),)
QUERY_COMMANDS = ("find", "aggregate", "count", "distinct", "update", "delete", "findAndModify")

#: Queries that must read a whole collection, by the function that sends them, with the reason.
#: A new entry needs a reason a reviewer accepts: the cost is the answer's size, not waste.
ALLOWED_SCANS: dict[str, str] = {}


@dataclass(frozen=True)
class Shape:
    service: str
    collection: str
    command: str
    shape: str
    site: str


@dataclass
class Example:
    database: str
    filter: dict[str, Any]
    sort: dict[str, Any] | None


@dataclass
class Recorder(monitoring.CommandListener):
    """Collects the services' query shapes; thread-safe (PyMongo may call from any thread)."""

    shapes: dict[Shape, list[Example]] = field(default_factory=dict)
    commands_seen: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name not in QUERY_COMMANDS:
            return
        site = _service_site()
        if site is None:
            return
        service = _service_of(event.database_name)
        if service is None:
            return
        for collection, flt, sort in _filters(name, event.command):
            key = Shape(service, collection, name, shape_of(flt), site)
            with self._lock:
                self.commands_seen += 1
                examples = self.shapes.setdefault(key, [])
                if len(examples) < 3 and all(e.database != event.database_name for e in examples):
                    examples.append(Example(event.database_name, _plain(flt), _plain(sort)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def services_seen(self) -> set[str]:
        return {s.service for s in self.shapes}


RECORDER = Recorder()


def install() -> None:
    """Record every client created from now on (call before any service starts)."""
    monitoring.register(RECORDER)


def _service_site() -> str | None:
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        # Comprehensions and generator expressions are named after the function around them.
        if (
            path.startswith(SOURCES)
            and path not in NOT_SERVICE
            and not frame.f_code.co_name.startswith("<")
        ):
            return f"{Path(path).relative_to(ROOT)}:{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _service_of(database: str) -> str | None:
    for service in SERVICES:
        if database == f"sarafan_{service}" or database.endswith(f"_{service}"):
            return service
    return None


def _filters(name: str, command: Mapping[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    collection = command.get(name)
    if name == "find":
        yield collection, command.get("filter") or {}, command.get("sort")
    elif name in ("count", "distinct"):
        yield collection, command.get("query") or {}, None
    elif name == "findAndModify":
        yield collection, command.get("query") or {}, command.get("sort")
    elif name == "update":
        for update in command.get("updates") or []:
            yield collection, update.get("q") or {}, None
    elif name == "delete":
        for delete in command.get("deletes") or []:
            yield collection, delete.get("q") or {}, None
    elif name == "aggregate":
        pipeline = list(command.get("pipeline") or [])
        first = pipeline[0] if pipeline else {}
        yield collection, first.get("$match", {}) if isinstance(first, Mapping) else {}, None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def shape_of(value: Any) -> str:
    """The filter with values replaced by their type names: `{"a": {"$eq": str}}`."""
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k}: {shape_of(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, (list, tuple)):
        kinds = sorted({shape_of(v) for v in value})
        return "[" + ", ".join(kinds) + "]"
    return type(value).__name__


def scans_on_nx(plan: Any, collection: str) -> bool:
    details = [str(step.get("detail", "")) for step in plan or [] if isinstance(step, Mapping)]
    if not details or any(d.startswith("Error") for d in details):
        return True
    return any(d == f"SCAN {collection}" or d.startswith(f"SCAN {collection} ") for d in details)


def scans_on_mongodb(plan: Any) -> bool:
    if isinstance(plan, Mapping):
        if plan.get("stage") == "COLLSCAN":
            return True
        return any(scans_on_mongodb(v) for v in plan.values())
    if isinstance(plan, list):
        return any(scans_on_mongodb(v) for v in plan)
    return False


#: Write filters use only what tests/integration/test_mongo_conformance.py shows nx-27017 does as
#: MongoDB does in a write: equality and ranges, `$exists`, and beside an `_id` equality `$in`
#: and `$nin` as guards. Never `$or`/`$and` (on nx-27017 a write filter with `$or` beside
#: other fields modified another document) nor `$ne` (an upsert over a document lacking the
#: field raised a duplicate key): docs/patterns.md, "Write-filter traps".
WRITE_OPERATORS = frozenset({"$eq", "$gt", "$gte", "$lt", "$lte", "$exists"})
GUARD_OPERATORS = WRITE_OPERATORS | {"$in", "$nin"}
WRITE_COMMANDS = ("update", "delete", "findAndModify")


def write_filter_problem(flt: Any) -> str | None:
    """Why a write filter is unsafe on nx-27017, or None."""
    if not isinstance(flt, Mapping):
        return "not a document"
    pinned = "_id" in flt and not (isinstance(flt["_id"], Mapping) and set(flt["_id"]) - {"$eq"})
    for name, condition in flt.items():
        if name.startswith("$"):
            return f"{name} in a write filter"
        if isinstance(condition, Mapping) and any(str(k).startswith("$") for k in condition):
            allowed = GUARD_OPERATORS if pinned else WRITE_OPERATORS
            if name == "_id":
                allowed = WRITE_OPERATORS | {"$in"}
            unknown = set(condition) - allowed
            if unknown:
                return f"{name}: {sorted(unknown)} in a write filter"
    return None


def unsafe_writes() -> list[str]:
    """Write filters the services sent that use an operator or shape nx-27017 gets wrong."""
    problems = []
    for shape, examples in sorted(RECORDER.shapes.items(), key=lambda kv: repr(kv[0])):
        if shape.command not in WRITE_COMMANDS:
            continue
        why = write_filter_problem(examples[0].filter)
        if why:
            where = f"{shape.service}.{shape.collection} {shape.command}"
            problems.append(f"{shape.site} [{where}] {shape.shape}: {why}")
    return problems


async def scanning_shapes(mongo_url: str) -> list[str]:
    """Explain every recorded shape; the ones that read a whole collection, described."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    problems: list[str] = []
    try:
        info = await client.admin.command("buildInfo")
        on_nx = info.get("process") == "nx_27017"
        existing: dict[str, set[str]] = {}
        for shape, examples in sorted(RECORDER.shapes.items(), key=lambda kv: repr(kv[0])):
            if shape.site.split(":")[-1] in ALLOWED_SCANS or shape.site in ALLOWED_SCANS:
                continue
            example = None
            for candidate in examples:
                if candidate.database not in existing:
                    names = await client[candidate.database].list_collection_names()
                    existing[candidate.database] = set(names)
                if shape.collection in existing[candidate.database]:
                    example = candidate
                    break
            if example is None:
                continue  # every database it ran in is gone: nothing left to explain
            db = client[example.database]
            explain: dict[str, Any] = {"find": shape.collection, "filter": example.filter}
            if example.sort and not on_nx:
                explain["sort"] = example.sort
            result = await db.command("explain", explain)
            plan = result.get("queryPlanner", {}).get("winningPlan")
            bad = scans_on_nx(plan, shape.collection) if on_nx else scans_on_mongodb(plan)
            if bad:
                problems.append(
                    f"{shape.site} [{shape.service}.{shape.collection} {shape.command}] "
                    f"{shape.shape} -> {plan}"
                )
    finally:
        await client.close()
    return problems
