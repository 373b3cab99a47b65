"""The memory emulator checked against nx-27017, call by call: a differential mirror.

With `pytest --mirror-memory` (or SARAFAN_MIRROR_MEMORY=1), every `MemoryDatabase(...)` a fast
test builds is wrapped in a `MirrorDatabase`: each call a store (or the test) makes on one of its
collections runs on the in-memory emulator AND on a database of its own on a real nx-27017
server, and the two answers are compared. Where they differ the call raises AssertionError
naming the operation, its arguments and both answers, and the test fails (also when the code
under test swallowed the error: every mismatch is recorded and the test's teardown checks the
record). At the end of each test the whole content of every collection is compared too. The
caller always gets the memory side's answer, so a test passes under the mirror exactly when it
passes on the emulator and the emulator answered as nx-27017 did.

The real side uses PyMongo's synchronous client (same wire commands and BSON codec as the
services' `AsyncMongoClient`, `tz_aware=True` as shared/store.py connects): a mirrored call
never yields to the event loop between its two halves, so concurrent tasks cannot interleave
their calls differently on the two sides, and `documents()` (synchronous) can be mirrored.

Normalised before comparing, and nothing else: ObjectIds (each side generates its own),
error messages (only the error's class, code and, for bulk writes, each write error's index
and code count), the order of results when the query has no sort (and the order among equal
sort keys), the order of a document's keys, index names, and `index_information()` to each
index's fields, `unique` and `expireAfterSeconds` (what nx-27017 reports).
`command(...)` is not mirrored: it answers from the emulator alone (ping; server-specific
commands such as serverStatus are refused there, as the stores expect off nx-27017).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import pymongo
from bson import Int64, ObjectId
from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.results import BulkWriteResult, DeleteResult, InsertManyResult, UpdateResult

from tests.fakes import memory
from tests.fakes.memory import MemoryCollection, MemoryDatabase

ENV = "SARAFAN_MIRROR_MEMORY"
_MISSING = object()


def wanted(option: bool = False) -> bool:
    """Whether this run mirrors the emulator (the pytest option, or the environment)."""
    return option or os.environ.get(ENV, "") not in ("", "0")


class Mismatch(AssertionError):
    """The emulator and nx-27017 answered one call differently."""


class Mirror:
    """The session's link to nx-27017: one client, the databases made for the running test and
    the mismatches found in it."""

    def __init__(self, url: str) -> None:
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=10_000
        )
        self.databases: list[MirrorDatabase] = []
        self.mismatches: list[str] = []
        #: Calls compared, and databases mirrored, in the whole session.
        self.calls = 0
        self.made = 0

    def wrap(self, db: MemoryDatabase) -> MirrorDatabase:
        # Not named after a service (tests/query_plans.py attributes `*_<service>` databases).
        real = self.client[f"mirror_{uuid.uuid4().hex[:12]}_{db.name[:20]}_db"]
        mirrored = MirrorDatabase(self, db, real)
        self.databases.append(mirrored)
        self.made += 1
        return mirrored

    def differ(self, where: str, call: str, mem: Any, real: Any) -> Mismatch:
        text = (
            f"memory emulator and nx-27017 differ on {where}.{call}\n"
            f"  memory:   {mem}\n  nx-27017: {real}"
        )
        self.mismatches.append(text)
        return Mismatch(text)

    def finish_test(self) -> list[str]:
        """Compare what every collection of the test holds, drop the test's databases, and
        return (and forget) the mismatches found during the test."""
        for db in self.databases:
            for coll in list(db._collections.values()):
                try:
                    coll.documents()
                except Mismatch:
                    pass  # recorded
            self.client.drop_database(db.real.name)
        self.databases.clear()
        found, self.mismatches = self.mismatches, []
        return found

    def close(self) -> None:
        self.client.close()


_active: Mirror | None = None


def start(url: str) -> Mirror:
    """Mirror every `MemoryDatabase` built from now on against the server at `url`."""
    global _active
    _active = Mirror(url)
    memory._mirrored = _active.wrap
    return _active


def active() -> Mirror | None:
    return _active


#: A file the session's totals are written to at the end (for tests/integration's check that
#: a mirrored run really ran on both sides).
REPORT_ENV = "SARAFAN_MIRROR_REPORT"


def stop() -> None:
    global _active
    memory._mirrored = None
    if _active is not None:
        report = os.environ.get(REPORT_ENV)
        if report:
            with open(report, "w", encoding="utf-8") as out:
                json.dump({"calls": _active.calls, "databases": _active.made}, out)
        _active.close()
    _active = None


# -- comparing answers ---------------------------------------------------------------------------


def canon(value: Any) -> Any:
    """A comparable form: BSON types kept apart (True is not 1, 1 is not 1.0), ObjectIds
    alike, key order ignored."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, Int64)):
        return ("int", int(value))
    if isinstance(value, float):
        return ("double", value)
    if isinstance(value, ObjectId):
        return ("objectId",)
    if isinstance(value, datetime):
        return ("date", value.isoformat())
    if isinstance(value, Mapping):
        return ("doc", tuple(sorted((str(k), canon(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(canon(v) for v in value))
    if value is None:
        return ("null",)
    return (type(value).__name__, value)


def _unordered(rows: list[Any]) -> list[Any]:
    return sorted((canon(r) for r in rows), key=repr)


def _path(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, Mapping) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _sort_fields(sort: Any) -> list[str]:
    if not sort:
        return []
    if isinstance(sort, str):
        return [sort]
    if isinstance(sort, Mapping):
        return list(sort)
    return [k if isinstance(k, str) else k[0] for k in sort]


def rows_of(rows: list[Any], sort: Any) -> Any:
    """What must agree between two result lists: the rows as a multiset and, when sorted, the
    sequence of sort keys (rows with equal keys may come in either order)."""
    fields = _sort_fields(sort)
    keys = [tuple(canon(_path(r, f)) if _path(r, f) is not _MISSING else None for f in fields)
            for r in rows] if fields else None  # fmt: skip
    return (_unordered(rows), keys)


def _error(exc: BaseException) -> Any:
    if isinstance(exc, BulkWriteError):
        d = exc.details
        return (
            "BulkWriteError",
            tuple((e.get("index"), e.get("code")) for e in d.get("writeErrors", [])),
            _bulk_counts(d),
        )
    code = getattr(exc, "code", None)
    if isinstance(exc, PyMongoError):
        return (type(exc).__name__, code)
    # Argument checks made by the driver before sending (the same class on both sides).
    return (type(exc).__name__,)


def _bulk_counts(d: Mapping[str, Any]) -> Any:
    upserted = tuple((u["index"], canon(u["_id"])) for u in d.get("upserted", []))
    names = ("nInserted", "nMatched", "nModified", "nRemoved", "nUpserted")
    return (*(d.get(n, 0) for n in names), upserted)


def _result(value: Any) -> Any:
    if isinstance(value, UpdateResult):
        return ("update", value.matched_count, value.modified_count, canon(value.upserted_id))
    if isinstance(value, DeleteResult):
        return ("delete", value.deleted_count)
    if isinstance(value, InsertManyResult):
        return ("insert_many", canon(value.inserted_ids))
    if isinstance(value, BulkWriteResult):
        return ("bulk", _bulk_counts(value.bulk_api_result))
    if hasattr(value, "inserted_id"):
        return ("insert_one", canon(value.inserted_id))
    return canon(value)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 2000 else text[:2000] + "…"


# -- the mirrored database -----------------------------------------------------------------------


class MirrorDatabase:
    """What `MemoryDatabase(name)` gives under the mirror: an `AsyncDatabase` stand-in whose
    collections run every call on the emulator and on nx-27017."""

    def __init__(self, mirror: Mirror, mem: MemoryDatabase, real: Any) -> None:
        self.mirror = mirror
        self.mem = mem
        self.real = real
        self.name = mem.name
        self.client = mem.client
        self._collections: dict[str, MirrorCollection] = {}

    def __repr__(self) -> str:
        return f"MirrorDatabase({self.name!r} on {self.real.name!r})"

    def __getitem__(self, name: str) -> MirrorCollection:
        if name not in self._collections:
            self._collections[name] = MirrorCollection(self, self.mem[name], self.real[name])
        return self._collections[name]

    def __getattr__(self, name: str) -> MirrorCollection:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def get_collection(self, name: str, **_: Any) -> MirrorCollection:
        return self[name]

    def with_options(self, **_: Any) -> MirrorDatabase:
        return self

    async def list_collection_names(self, **_: Any) -> list[str]:
        mem = await self.mem.list_collection_names()
        real = sorted(self.real.list_collection_names())
        if mem != real:
            raise self.mirror.differ(self.name, "list_collection_names()", mem, real)
        return mem

    async def drop_collection(self, name: str, **_: Any) -> None:
        await self[name].drop()

    async def create_collection(self, name: str, **_: Any) -> MirrorCollection:
        await self.mem.create_collection(name)
        self.real.create_collection(name)
        return self[name]

    async def command(self, command: Any, **kwargs: Any) -> Any:
        return await self.mem.command(command, **kwargs)


class MirrorCollection:
    """One collection on both sides; each method answers with the emulator's answer after
    checking that nx-27017 gave the same."""

    def __init__(self, database: MirrorDatabase, mem: MemoryCollection, real: Any) -> None:
        self.database = database
        self.mem = mem
        self.real = real
        self.name = mem.name
        self.full_name = mem.full_name

    def __repr__(self) -> str:
        return f"MirrorCollection({self.full_name!r})"

    def with_options(self, **_: Any) -> MirrorCollection:
        return self

    # -- the two halves of a call ----------------------------------------------------------------

    def _differ(self, call: str, mem: Any, real: Any) -> Mismatch:
        return self.database.mirror.differ(self.full_name, call, mem, real)

    async def _both(
        self,
        call: str,
        run_mem: Callable[[], Any],
        run_real: Callable[[], Any],
        compare: Callable[[Any], Any] = _result,
    ) -> Any:
        """Run one call on each side (the emulator first: it sets the `_id`s pymongo would set
        on the caller's documents, so both sides store the same), compare, answer as memory."""
        self.database.mirror.calls += 1
        mem_exc = real_exc = None
        mem = real = None
        try:
            mem = await run_mem()
        except NotImplementedError:
            raise
        except Exception as exc:
            mem_exc = exc
        try:
            real = run_real()
        except Exception as exc:
            real_exc = exc
        got_mem = _error(mem_exc) if mem_exc else compare(mem)
        got_real = _error(real_exc) if real_exc else compare(real)
        if got_mem != got_real:
            raise self._differ(
                call,
                _brief(mem_exc if mem_exc else mem) + f"\n  compared: {_brief(got_mem)}",
                _brief(real_exc if real_exc else real) + f"\n  compared: {_brief(got_real)}",
            )
        if mem_exc is not None:
            raise mem_exc
        return mem

    # -- writing ---------------------------------------------------------------------------------

    async def insert_one(self, document: dict[str, Any], **kw: Any) -> Any:
        return await self._both(
            f"insert_one({_brief(document)})",
            lambda: self.mem.insert_one(document, **kw),
            lambda: self.real.insert_one(document, **kw),
        )

    async def insert_many(self, documents: Iterable[dict[str, Any]], **kw: Any) -> Any:
        docs = list(documents)
        return await self._both(
            f"insert_many({_brief(docs)}, {kw})",
            lambda: self.mem.insert_many(docs, **kw),
            lambda: self.real.insert_many(docs, **kw),
        )

    async def update_one(self, filter: Any, update: Any, upsert: bool = False, **kw: Any) -> Any:
        return await self._both(
            f"update_one({filter!r}, {_brief(update)}, upsert={upsert})",
            lambda: self.mem.update_one(filter, update, upsert=upsert, **kw),
            lambda: self.real.update_one(filter, update, upsert=upsert, **kw),
        )

    async def update_many(self, filter: Any, update: Any, upsert: bool = False, **kw: Any) -> Any:
        return await self._both(
            f"update_many({filter!r}, {_brief(update)}, upsert={upsert})",
            lambda: self.mem.update_many(filter, update, upsert=upsert, **kw),
            lambda: self.real.update_many(filter, update, upsert=upsert, **kw),
        )

    async def replace_one(
        self, filter: Any, replacement: Any, upsert: bool = False, **kw: Any
    ) -> Any:
        return await self._both(
            f"replace_one({filter!r}, {_brief(replacement)}, upsert={upsert})",
            lambda: self.mem.replace_one(filter, replacement, upsert=upsert, **kw),
            lambda: self.real.replace_one(filter, replacement, upsert=upsert, **kw),
        )

    async def find_one_and_update(self, filter: Any, update: Any, *args: Any, **kw: Any) -> Any:
        return await self._both(
            f"find_one_and_update({filter!r}, {_brief(update)}, {args}, {kw})",
            lambda: self.mem.find_one_and_update(filter, update, *args, **kw),
            lambda: self.real.find_one_and_update(filter, update, *args, **kw),
            canon,
        )

    async def find_one_and_delete(self, filter: Any, *args: Any, **kw: Any) -> Any:
        return await self._both(
            f"find_one_and_delete({filter!r}, {args}, {kw})",
            lambda: self.mem.find_one_and_delete(filter, *args, **kw),
            lambda: self.real.find_one_and_delete(filter, *args, **kw),
            canon,
        )

    async def delete_one(self, filter: Any, **kw: Any) -> Any:
        return await self._both(
            f"delete_one({filter!r})",
            lambda: self.mem.delete_one(filter, **kw),
            lambda: self.real.delete_one(filter, **kw),
        )

    async def delete_many(self, filter: Any, **kw: Any) -> Any:
        return await self._both(
            f"delete_many({filter!r})",
            lambda: self.mem.delete_many(filter, **kw),
            lambda: self.real.delete_many(filter, **kw),
        )

    async def bulk_write(self, requests: Iterable[Any], ordered: bool = True, **kw: Any) -> Any:
        ops = list(requests)
        return await self._both(
            f"bulk_write({_brief([_describe(op) for op in ops])}, ordered={ordered})",
            lambda: self.mem.bulk_write(ops, ordered=ordered, **kw),
            lambda: self.real.bulk_write(ops, ordered=ordered, **kw),
        )

    # -- reading ---------------------------------------------------------------------------------

    def find(self, filter: Any = None, projection: Any = None, **kw: Any) -> MirrorCursor:
        call = f"find({filter!r}, {projection!r}, {kw})"
        return MirrorCursor(
            self,
            call,
            self.mem.find(filter, projection, **kw),
            self.real.find(filter, projection, **kw),
            kw.get("sort"),
        )

    async def find_one(self, filter: Any = None, projection: Any = None, **kw: Any) -> Any:
        return await self._both(
            f"find_one({filter!r}, {projection!r}, {kw})",
            lambda: self.mem.find_one(filter, projection, **kw),
            lambda: self.real.find_one(filter, projection, **kw),
            canon,
        )

    async def count_documents(self, filter: Any, **kw: Any) -> int:
        return await self._both(
            f"count_documents({filter!r})",
            lambda: self.mem.count_documents(filter, **kw),
            lambda: self.real.count_documents(filter, **kw),
            canon,
        )

    async def estimated_document_count(self, **kw: Any) -> int:
        return await self._both(
            "estimated_document_count()",
            lambda: self.mem.estimated_document_count(**kw),
            lambda: self.real.estimated_document_count(**kw),
            canon,
        )

    async def distinct(self, key: str, filter: Any = None) -> list[Any]:
        return await self._both(
            f"distinct({key!r}, {filter!r})",
            lambda: self.mem.distinct(key, filter),
            lambda: self.real.distinct(key, filter),
            _unordered,
        )

    async def aggregate(self, pipeline: list[Any], **kw: Any) -> MirrorCursor:
        last_group = max((i for i, s in enumerate(pipeline) if "$group" in s), default=-1)
        sorts = [s["$sort"] for s in pipeline[last_group + 1 :] if "$sort" in s]
        return MirrorCursor(
            self,
            f"aggregate({pipeline!r})",
            await self.mem.aggregate(pipeline, **kw),
            lambda: list(self.real.aggregate(pipeline, **kw)),
            sorts[-1] if sorts else None,
        )

    # -- indexes ---------------------------------------------------------------------------------

    async def create_index(self, keys: Any, **options: Any) -> str:
        return await self._both(
            f"create_index({keys!r}, {options})",
            lambda: self.mem.create_index(keys, **options),
            lambda: self.real.create_index(keys, **options),
            lambda name: None,  # nx-27017 names indexes its own way
        )

    async def index_information(self) -> dict[str, Any]:
        return await self._both(
            "index_information()",
            lambda: self.mem.index_information(),
            lambda: self.real.index_information(),
            _indexes,
        )

    async def drop_index(self, name: str, **kw: Any) -> None:
        # Names differ between the sides: drop on nx-27017 the index with the same key.
        info = await self.mem.index_information()
        key = info.get(name, {}).get("key")
        await self.mem.drop_index(name, **kw)
        for real_name, spec in self.real.index_information().items():
            if spec.get("key") == key:
                self.real.drop_index(real_name)

    async def drop(self, **kw: Any) -> None:
        await self.mem.drop(**kw)
        self.real.drop()

    # -- for tests -------------------------------------------------------------------------------

    def documents(self) -> list[dict[str, Any]]:
        """The emulator's stored documents, after checking nx-27017 holds the same."""
        mem = self.mem.documents()
        real = list(self.real.find({}))
        if _unordered(mem) != _unordered(real):
            raise self._differ("documents()", _brief(mem), _brief(real))
        return mem


#: What nx-27017's index_information reports besides the key: it names indexes its own way,
#: gives every key the direction 1 and leaves out `sparse` and `partialFilterExpression`
#: (which it enforces; tests/integration/test_mongo_conformance.py checks that).
_INDEX_OPTIONS = ("unique", "expireAfterSeconds")


def _indexes(info: Mapping[str, Any]) -> Any:
    return sorted(
        (
            tuple(k[0] for k in spec["key"]),
            canon({k: spec[k] for k in _INDEX_OPTIONS if spec.get(k) not in (None, False)}),
        )
        for spec in info.values()
    )


def _describe(op: Any) -> str:
    if isinstance(op, InsertOne):
        return f"InsertOne({op._doc!r})"
    if isinstance(op, (UpdateOne, UpdateMany, ReplaceOne)):
        return f"{type(op).__name__}({op._filter!r}, {op._doc!r}, upsert={op._upsert})"
    if isinstance(op, (DeleteOne, DeleteMany)):
        return f"{type(op).__name__}({op._filter!r})"
    return repr(op)


class MirrorCursor:
    """`find`/`aggregate`'s cursor on both sides: chained calls go to both; at the first read
    both are read whole and compared, then the memory side's rows are served."""

    def __init__(self, coll: MirrorCollection, call: str, mem: Any, real: Any, sort: Any) -> None:
        self._coll = coll
        self._call = call
        self._mem = mem
        self._real = real  # a pymongo cursor, or a callable reading the aggregation
        self._sort = sort
        self._chain: list[str] = []
        self._rows: list[Any] | None = None
        self._at = 0

    def sort(self, key: Any, direction: Any = None) -> MirrorCursor:
        self._mem.sort(key, direction)
        self._real.sort(key, direction) if direction is not None else self._real.sort(key)
        self._sort = key if direction is None else [(key, direction)]
        self._chain.append(f".sort({key!r}, {direction!r})")
        return self

    def skip(self, n: int) -> MirrorCursor:
        self._mem.skip(n)
        self._real.skip(n)
        self._chain.append(f".skip({n})")
        return self

    def limit(self, n: int) -> MirrorCursor:
        self._mem.limit(n)
        self._real.limit(n)
        self._chain.append(f".limit({n})")
        return self

    def batch_size(self, n: int) -> MirrorCursor:
        self._mem.batch_size(n)
        if not callable(self._real):
            self._real.batch_size(n)
        return self

    async def _read(self) -> list[Any]:
        if self._rows is None:
            call = self._call + "".join(self._chain)
            self._coll.database.mirror.calls += 1
            mem = await self._mem.to_list(None)
            real = self._real() if callable(self._real) else list(self._real)
            if rows_of(mem, self._sort) != rows_of(real, self._sort):
                raise self._coll._differ(call, _brief(mem), _brief(real))
            self._rows = mem
        return self._rows

    def __aiter__(self) -> MirrorCursor:
        return self

    async def __anext__(self) -> Any:
        rows = await self._read()
        if self._at >= len(rows):
            raise StopAsyncIteration
        self._at += 1
        return rows[self._at - 1]

    async def to_list(self, length: int | None = None) -> list[Any]:
        rows = await self._read()
        end = len(rows) if not length else min(len(rows), self._at + length)
        out, self._at = rows[self._at : end], end
        return out

    async def close(self) -> None:
        self._rows, self._at = [], 0

    async def __aenter__(self) -> MirrorCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
