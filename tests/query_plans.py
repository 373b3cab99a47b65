"""Every query the services send during the tests, and whether the server can answer it from an
index — the test-suite version of MongoDB's `notablescan` (docs/patterns.md, "Queries that stay
fast").

PyMongo's command monitoring records each command as it is sent; a command counts as the
services' own when the code that issued it lies in `services/` or `shared/` (walking the Python
stack, so a test's own reads and the conformance suite's deliberate odd filters are left out).
Each distinct filter *shape* (field names and operators, values replaced by their types) is
explained once at the end: nx-27017 answers with SQLite's plan (`SCAN <collection>` is a full
scan, `SEARCH … USING INDEX` is not), MongoDB with its stages (`COLLSCAN`).

A query with a sort and a limit (a "top N", a page) is also checked for a sort the index does not
serve, which reads and sorts every matching document to return N. On MongoDB that is a blocking
`SORT` stage in the plan. nx-27017 explains the filter only (its plan never shows SQLite's temp
B-tree for the ORDER BY), so there the sort is compared with the index the plan names: the index
must list the filter's equality fields first, then exactly the sort keys in order (columns after
them do no harm). nx-27017 names an index `idx_<collection>_<fields joined by _>` and keeps every
index ascending whatever direction it was created with (SQLite may read one backwards), so the
sort keys must also all go the same way. `listIndexes` gives each index's fields.
"""

from __future__ import annotations

import re
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
#: Sorted, limited queries whose sort the index need not serve, by the function that sends them,
#: with the reason: the matching documents stay few however large the community grows.
ALLOWED_SORTS: dict[str, str] = {
    "_median_wait": "the median time to a first answer reads the month's answered questions in "
    "wait order (one, two rows returned after a skip): bounded by a month of questions, not by "
    "the members or the history; the one figure of /v1/stats that is not a kept counter",
}


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
    limit: int | None = None


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
        for collection, flt, sort, limit in _filters(name, event.command):
            # The sort is part of the shape: one filter read in two orders is two queries.
            key = Shape(service, collection, name, shape_of(flt) + _sort_shape(sort), site)
            with self._lock:
                self.commands_seen += 1
                examples = self.shapes.setdefault(key, [])
                if len(examples) < 3 and all(e.database != event.database_name for e in examples):
                    examples.append(Example(event.database_name, _plain(flt), _plain(sort), limit))

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


def _filters(name: str, command: Mapping[str, Any]) -> Iterator[tuple[str, Any, Any, int | None]]:
    """(collection, filter, sort, limit) of each query in a command; limit None: all of it."""
    collection = command.get(name)
    if name == "find":
        limit = command.get("limit") or (1 if command.get("singleBatch") else None)
        yield collection, command.get("filter") or {}, command.get("sort"), limit
    elif name in ("count", "distinct"):
        yield collection, command.get("query") or {}, None, None
    elif name == "findAndModify":
        yield collection, command.get("query") or {}, command.get("sort"), 1
    elif name == "update":
        for update in command.get("updates") or []:
            yield collection, update.get("q") or {}, None, None
    elif name == "delete":
        for delete in command.get("deletes") or []:
            yield collection, delete.get("q") or {}, None, None
    elif name == "aggregate":
        pipeline = list(command.get("pipeline") or [])
        first = pipeline[0] if pipeline else {}
        match = first.get("$match", {}) if isinstance(first, Mapping) else {}
        stages = [s for s in pipeline[1:3] if isinstance(s, Mapping)]
        sort = next((s["$sort"] for s in stages if "$sort" in s), None)
        limit = next((s["$limit"] for s in pipeline if isinstance(s, Mapping) and "$limit" in s),
                     None)  # fmt: skip
        yield collection, match, sort, limit


def _sort_shape(sort: Any) -> str:
    if not sort:
        return ""
    items = sort.items() if isinstance(sort, Mapping) else sort
    return " sort(" + ", ".join(f"{k}: {v}" for k, v in items) + ")"


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


def equality_fields(flt: Mapping[str, Any]) -> set[str]:
    """The fields a filter pins to one value (`{"f": {"$eq": v}}`, or a plain value)."""
    pinned = set()
    for name, condition in flt.items():
        if name.startswith("$"):
            continue
        if isinstance(condition, Mapping) and any(str(k).startswith("$") for k in condition):
            if set(condition) == {"$eq"}:
                pinned.add(name)
        else:
            pinned.add(name)
    return pinned


def indexes_named_in_nx_plan(plan: Any, collection: str) -> list[str]:
    """The indexes an nx-27017 (SQLite) plan searches the collection with."""
    found = []
    for step in plan or []:
        detail = str(step.get("detail", "")) if isinstance(step, Mapping) else ""
        match = re.match(rf"SEARCH {re.escape(collection)} USING (?:COVERING )?INDEX (\S+)", detail)
        if match:
            found.append(match.group(1))
    return found


def sort_problem_on_nx(
    plan: Any,
    collection: str,
    flt: Mapping[str, Any],
    sort: Mapping[str, Any],
    indexes: Mapping[str, list[str]],
) -> str | None:
    """Why the index an nx-27017 plan names does not serve the sort (None: it does).

    `indexes` maps each index name of the collection to its fields in order (`listIndexes`;
    the primary key's is `["_id"]`). Served: the index lists the filter's equality fields
    first (in any order), then exactly the sort keys in order, and the keys all go one way
    (nx-27017 keeps every index ascending; SQLite reads one forwards or backwards).
    """
    keys = list(sort.items())
    wanted = [name for name, _ in keys]
    pinned = equality_fields(flt)
    problems = []
    if len({int(direction) for _, direction in keys}) > 1:
        problems.append(f"sort {dict(keys)} mixes directions (nx-27017 indexes are ascending)")
    used = indexes_named_in_nx_plan(plan, collection)
    served = False
    for name in used:
        fields = list(indexes.get(name) or [])
        head, rest = fields[: len(pinned)], fields[len(pinned) :]
        served = served or (bool(fields) and set(head) == pinned and rest[: len(wanted)] == wanted)
    if not served:
        named = ", ".join(f"{n} {indexes.get(n, '(fields unknown)')}" for n in used) or "no index"
        problems.append(
            f"sort {wanted} after equality on {sorted(pinned)} is not served by {named} "
            "(the index must list the equality fields, then exactly the sort keys)"
        )
    return "; ".join(problems) or None


def sort_problem_on_mongodb(plan: Any) -> str | None:
    """A blocking `SORT` stage (the server sorts what it read; an index order has none)."""
    if isinstance(plan, Mapping):
        if plan.get("stage") in ("SORT", "SORT_KEY_GENERATOR"):
            return f"blocking {plan.get('stage')} of {plan.get('sortPattern')}"
        for value in plan.values():
            if (why := sort_problem_on_mongodb(value)) is not None:
                return why
    if isinstance(plan, list):
        for value in plan:
            if (why := sort_problem_on_mongodb(value)) is not None:
                return why
    return None


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


def _allowed(site: str, allowed: Mapping[str, str]) -> bool:
    return site.split(":")[-1] in allowed or site in allowed


async def _index_fields(db: Any, collection: str) -> dict[str, list[str]]:
    """Each index of a collection and its fields in order (nx-27017: its SQLite name)."""
    fields = {}
    async for index in await db[collection].list_indexes():
        fields[index["name"]] = list(index.get("key", {}))
    fields.setdefault(f"idx_{collection}_id", ["_id"])
    return fields


async def plan_problems(mongo_url: str) -> tuple[list[str], list[str]]:
    """Explain every recorded shape: (those that read a whole collection, those whose sort the
    index does not serve), each described."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    scans: list[str] = []
    sorts: list[str] = []
    try:
        info = await client.admin.command("buildInfo")
        on_nx = info.get("process") == "nx_27017"
        existing: dict[str, set[str]] = {}
        for shape, examples in sorted(RECORDER.shapes.items(), key=lambda kv: repr(kv[0])):
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
                if example.limit:
                    explain["limit"] = example.limit
            result = await db.command("explain", explain)
            plan = result.get("queryPlanner", {}).get("winningPlan")
            where = f"{shape.site} [{shape.service}.{shape.collection} {shape.command}]"
            bad = scans_on_nx(plan, shape.collection) if on_nx else scans_on_mongodb(plan)
            if bad and not _allowed(shape.site, ALLOWED_SCANS):
                scans.append(f"{where} {shape.shape} -> {plan}")
            if bad or not (example.sort and example.limit) or _allowed(shape.site, ALLOWED_SORTS):
                continue
            if on_nx:
                indexes = await _index_fields(db, shape.collection)
                why = sort_problem_on_nx(plan, shape.collection, example.filter,
                                         example.sort, indexes)  # fmt: skip
            else:
                why = sort_problem_on_mongodb(plan)
            if why is not None:
                sorts.append(f"{where} {shape.shape} limit {example.limit}: {why} -> {plan}")
    finally:
        await client.close()
    return scans, sorts


async def scanning_shapes(mongo_url: str) -> list[str]:
    """Explain every recorded shape; the ones that read a whole collection, described."""
    return (await plan_problems(mongo_url))[0]
