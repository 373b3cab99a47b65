"""An in-memory stand-in for the part of pymongo's async API the kernel and the stores use.

For fast use-case tests: `MemoryDatabase()` is given where an `AsyncDatabase` is expected
(`db["members"]` is a `MemoryCollection`), so a store, a `UnitOfWork` with a fake relay, or the
bus's `processed_events` run without a server, in microseconds.

It is a verified fake of nx-27017, the server CI runs: `pytest --mirror-memory` (see
tests/fakes/mirror.py) runs every call the fast tests make on it and on a real nx-27017 and
fails on any difference in the answers, the errors or what is stored;
tests/integration/test_fakes_conformance.py runs the fast tests that way. Where nx-27017 and
MongoDB differ (tests/integration/test_mongo_conformance.py), this follows nx-27017.

What it keeps of the server's behaviour, because the code under test depends on it:
- documents are copied in and out (a caller mutating a result does not change the stored one),
  tuples become lists and datetimes are UTC-aware with millisecond precision, as a round trip
  through BSON with `tz_aware=True` gives;
- unique indexes (compound, sparse, with a `partialFilterExpression`) and `_id` refuse a
  duplicate with DuplicateKeyError / BulkWriteError (code 11000, `writeErrors` with `index`);
  a document missing a key field (or holding null) never collides (nx-27017, as SQLite);
- an update that changes nothing reports `modified_count == 0` (guards rely on it), an upsert
  seeds the new document from the filter's equalities;
- comparisons only match values of the same kind (a number never matches `{"$gt": "a"}`),
  sorting follows MongoDB's order of types (missing/None < numbers < strings < documents <
  arrays < booleans < dates), and an array field matches a scalar equality on any element.

What it copies of nx-27017 where MongoDB answers otherwise (each found by the mirror):
- a scalar an update writes by path into a stored document comes back as SQLite keeps it: a
  boolean as 1/0, a double with 15 significant digits, a date as 'YYYY-MM-DD HH:MM:SS[.ffffff]'
  (`$set`, `$inc`, `$min`/`$max`, and `$push`ed elements); whole subdocuments and the document
  an upsert inserts keep their values; `$max` of a date never replaces a stored value;
- modified counts use Python's equality (True == 1) and a replacement always counts;
- find_one_and_update's upsert ignores `$setOnInsert` and writes its `$set` by path;
- projections: `{"_id": 1}` keeps only `_id`, a dotted path included comes back as a flat key
  (`{"seats.s1": 1}`), a dotted path excluded is ignored;
- aggregation: `$sum` of no numbers is null, `$count` of nothing is `{name: 0}`.

What it does not do: transactions, change streams, `$where`/`$expr`, collation, text search,
index use (every query is a scan; tests/integration/test_query_plans.py checks the plans), and
nx-27017's differences the fast tests never reach (dates compared to the second, indexes naming
`_id`: see test_mongo_conformance.py). Unsupported operators raise NotImplementedError so a
test never passes on a silent mismatch.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.results import (
    BulkWriteResult,
    DeleteResult,
    InsertManyResult,
    InsertOneResult,
    UpdateResult,
)

from shared.documents import Doc

DUPLICATE_KEY = 11000
_MISSING = object()

# -- values ------------------------------------------------------------------------------------


def _stored(value: Any) -> Any:
    """A value as it comes back from the server: copied, tuples as lists, dates UTC in ms."""
    if isinstance(value, Mapping):
        return {str(k): _stored(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stored(v) for v in value]
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        aware = aware.astimezone(UTC)
        return aware.replace(microsecond=aware.microsecond // 1000 * 1000)
    return copy.copy(value)


def _rank(value: Any) -> int:
    """MongoDB's order of BSON types (missing sorts as null)."""
    if value is None or value is _MISSING:
        return 1
    if isinstance(value, bool):
        return 8
    if isinstance(value, (int, float)):
        return 2
    if isinstance(value, str):
        return 3
    if isinstance(value, Mapping):
        return 4
    if isinstance(value, list):
        return 5
    if isinstance(value, bytes):
        return 6
    if isinstance(value, ObjectId):
        return 7
    if isinstance(value, datetime):
        return 9
    return 10


def _order_key(value: Any) -> tuple[Any, ...]:
    rank = _rank(value)
    if rank == 1:
        return (rank,)
    if rank == 4:
        return (rank, tuple((k, _order_key(v)) for k, v in value.items()))
    if rank == 5:
        return (rank, tuple(_order_key(v) for v in value))
    return (rank, value)


def _freeze(value: Any) -> Any:
    """A hashable form with MongoDB's equality (1 == 1.0, but True is not 1)."""
    if isinstance(value, Mapping):
        return ("doc", tuple((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("arr", tuple(_freeze(v) for v in value))
    if isinstance(value, bool):
        return ("bool", value)
    if value is _MISSING:
        return None
    return value


def _equal(a: Any, b: Any) -> bool:
    return _freeze(a) == _freeze(b)


# -- paths -------------------------------------------------------------------------------------


def _get(doc: Any, path: str) -> Any:
    """The value at a dotted path, _MISSING if absent; through arrays, the list of values."""
    current = doc
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part, _MISSING)
        elif isinstance(current, list):
            if part.isdigit():
                index = int(part)
                current = current[index] if index < len(current) else _MISSING
            else:
                found = [_get(item, part) for item in current if isinstance(item, Mapping)]
                current = [v for v in found if v is not _MISSING] or _MISSING
        else:
            return _MISSING
        if current is _MISSING:
            return _MISSING
    return current


def _parent(doc: Doc, path: str, create: bool) -> tuple[Any, str]:
    *parents, last = path.split(".")
    current: Any = doc
    for part in parents:
        if isinstance(current, list) and part.isdigit():
            current = current[int(part)]
            continue
        nxt = current.get(part)
        if nxt is None:
            if not create:
                return None, last
            nxt = current[part] = {}
        current = nxt
    return current, last


def _set(doc: Doc, path: str, value: Any) -> None:
    parent, last = _parent(doc, path, create=True)
    if isinstance(parent, list) and last.isdigit():
        parent[int(last)] = value
    else:
        parent[last] = value


def _unset(doc: Doc, path: str) -> None:
    parent, last = _parent(doc, path, create=False)
    if isinstance(parent, Mapping):
        parent.pop(last, None)


# -- filters -----------------------------------------------------------------------------------

_TYPE_NAMES = {
    "string": str,
    "int": int,
    "long": int,
    "double": float,
    "number": (int, float),
    "bool": bool,
    "object": dict,
    "array": list,
    "date": datetime,
    "objectId": ObjectId,
    "null": type(None),
}


def _comparable(a: Any, b: Any) -> bool:
    return a is not _MISSING and _rank(a) == _rank(b)


def _candidates(value: Any) -> list[Any]:
    """A field's value and, for an array, each element (MongoDB matches on either)."""
    return [value, *value] if isinstance(value, list) else [value]


def _op(op: str, value: Any, arg: Any) -> bool:
    if op == "$eq":
        if arg is None:
            return value is _MISSING or any(v is None for v in _candidates(value))
        return any(_equal(v, arg) for v in _candidates(value))
    if op == "$ne":
        return not _op("$eq", value, arg)
    if op == "$in":
        return any(_op("$eq", value, a) for a in arg)
    if op == "$nin":
        return not _op("$in", value, arg)
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return any(_compare(op, v, arg) for v in _candidates(value))
    if op == "$type":
        kinds = _TYPE_NAMES[arg]
        return (
            value is not _MISSING
            and isinstance(value, kinds)
            and (arg == "bool" or not isinstance(value, bool))
        )
    if op == "$size":
        return isinstance(value, list) and len(value) == arg
    if op == "$not":
        return not _condition(value, arg)
    if op == "$elemMatch":
        return isinstance(value, list) and any(
            matches(v, arg) if isinstance(v, Mapping) else _condition(v, arg) for v in value
        )
    raise NotImplementedError(f"query operator {op} is not in the memory fake")


def _compare(op: str, value: Any, arg: Any) -> bool:
    if not _comparable(value, arg):
        return False
    a, b = _order_key(value), _order_key(arg)
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def _is_operators(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(str(k).startswith("$") for k in value)


def _condition(value: Any, cond: Any) -> bool:
    cond = _stored(cond)  # a naive date in a query means UTC, as the driver sends it
    if _is_operators(cond):
        return all(_op(op, value, arg) for op, arg in cond.items())
    return _op("$eq", value, cond)


def matches(doc: Mapping[str, Any], flt: Mapping[str, Any] | None) -> bool:
    """Whether a document matches a MongoDB filter (the subset the module's text names)."""
    for key, cond in (flt or {}).items():
        if key == "$and":
            ok = all(matches(doc, f) for f in cond)
        elif key == "$or":
            ok = any(matches(doc, f) for f in cond)
        elif key == "$nor":
            ok = not any(matches(doc, f) for f in cond)
        elif key.startswith("$"):
            raise NotImplementedError(f"top-level {key} is not in the memory fake")
        else:
            ok = _condition(_get(doc, key), cond)
        if not ok:
            return False
    return True


# -- projection and sorting --------------------------------------------------------------------


def project(doc: Doc, projection: Mapping[str, Any] | Iterable[str] | None) -> Doc:
    """A copy of `doc` with a projection applied as nx-27017 applies it: inclusion or
    exclusion, `{"_id": 1}` alone keeps only `_id`; but a dotted path included comes back as a
    flat key (`{"seats.s1": 1}`, where MongoDB nests it, see shared.store.projected) and a
    dotted path excluded is ignored (the whole subdocument comes back)."""
    if projection is None:
        return _stored(doc)
    spec = dict(projection) if isinstance(projection, Mapping) else dict.fromkeys(projection, 1)
    id_spec = spec.pop("_id", _MISSING)
    keep_id = bool(1 if id_spec is _MISSING else id_spec)
    if not spec and keep_id and id_spec is not _MISSING:
        return {"_id": _stored(doc["_id"])} if "_id" in doc else {}
    if spec and any(spec.values()):
        out: Doc = {"_id": _stored(doc["_id"])} if keep_id and "_id" in doc else {}
        for path in spec:
            value = _get(doc, path)
            if value is not _MISSING:
                out[path] = _stored(value)
        return out
    out = _stored(doc)
    for path in spec:
        if "." not in path:
            out.pop(path, None)
    if not keep_id:
        out.pop("_id", None)
    return out


def _sort_spec(key: Any, direction: Any = None) -> list[tuple[str, int]]:
    if isinstance(key, str):
        return [(key, int(direction or 1))]
    if isinstance(key, Mapping):
        return [(k, int(v)) for k, v in key.items()]
    return [(k, int(v)) for k, v in key]


def _sorted(docs: list[Doc], spec: list[tuple[str, int]]) -> list[Doc]:
    # Stable sorts from the last key to the first give a compound order with mixed directions.
    for field, direction in reversed(spec):
        docs = sorted(docs, key=lambda d, f=field: _order_key(_get(d, f)), reverse=direction < 0)
    return docs


class MemoryCursor:
    """What `find` and `aggregate` return: chainable, async-iterable, lazily evaluated."""

    def __init__(self, produce: Any) -> None:
        self._produce = produce  # () -> list of documents, called on first read
        self._sort: list[tuple[str, int]] = []
        self._skip = 0
        self._limit = 0
        self._rows: Iterator[Doc] | None = None

    def sort(self, key: Any, direction: Any = None) -> MemoryCursor:
        self._sort = _sort_spec(key, direction)
        return self

    def skip(self, n: int) -> MemoryCursor:
        self._skip = n
        return self

    def limit(self, n: int) -> MemoryCursor:
        self._limit = n
        return self

    def batch_size(self, n: int) -> MemoryCursor:
        return self

    def _iter(self) -> Iterator[Doc]:
        if self._rows is None:
            rows = self._produce(self._sort)
            rows = rows[self._skip :]
            if self._limit:
                rows = rows[: abs(self._limit)]
            self._rows = iter(rows)
        return self._rows

    def __aiter__(self) -> MemoryCursor:
        return self

    async def __anext__(self) -> Doc:
        try:
            return next(self._iter())
        except StopIteration:
            raise StopAsyncIteration from None

    async def to_list(self, length: int | None = None) -> list[Doc]:
        rows = self._iter()
        return list(rows if not length else itertools.islice(rows, length))

    async def close(self) -> None:
        self._rows = iter(())

    async def __aenter__(self) -> MemoryCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- updates -----------------------------------------------------------------------------------


def _number(value: Any) -> Any:
    return 0 if value is _MISSING or value is None else value


def _by_path(value: Any) -> Any:
    """nx-27017: a scalar an update writes by path into a stored document goes through a SQLite
    parameter: a boolean becomes 1/0, a double keeps 15 significant digits, a date becomes the
    string 'YYYY-MM-DD HH:MM:SS[.ffffff]' (UTC). Documents and arrays written whole keep their
    values (tests/integration/test_mongo_conformance.py states MongoDB's behaviour)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return float(f"{value:.15g}")
    if isinstance(value, datetime):
        return str(value.astimezone(UTC).replace(tzinfo=None))
    return value


def _pushed(value: Any) -> Any:
    """nx-27017: an element `$push`/`$addToSet` appends: a double keeps 15 significant
    digits, a date becomes the string of its JSON form ('{"$date":"…"}')."""
    if isinstance(value, float) and not isinstance(value, bool):
        return float(f"{value:.15g}")
    if isinstance(value, datetime):
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return '{"$date":"' + naive.isoformat(timespec="microseconds") + '"}'
    return value


def _apply_update(doc: Doc, update: Mapping[str, Any], inserting: bool, by_path: bool) -> None:
    """`update` applied to `doc`; `inserting`: the document an upsert creates ($setOnInsert
    counts); `by_path`: nx-27017 writes each field into the stored document (see _by_path)."""
    for op, fields in update.items():
        if op == "$setOnInsert" and not inserting:
            continue
        for path, arg in fields.items():
            _apply_one(doc, op, path, _stored(arg), by_path)


def _apply_one(doc: Doc, op: str, path: str, arg: Any, by_path: bool) -> None:
    current = _get(doc, path)
    scalar = _by_path if by_path else (lambda v: v)
    if op in ("$set", "$setOnInsert"):
        _set(doc, path, scalar(arg))
    elif op == "$unset":
        _unset(doc, path)
    elif op == "$inc":
        _set(doc, path, scalar(_number(current) + arg))
    elif op in ("$max", "$min"):
        if by_path and op == "$max" and isinstance(arg, datetime) and current is not _MISSING:
            return  # nx-27017: `$max` of a date never replaces a stored value
        new, old = _order_key(arg), _order_key(current)
        if current is _MISSING or (new > old if op == "$max" else new < old):
            _set(doc, path, scalar(arg))
    elif op in ("$push", "$addToSet"):
        items = arg["$each"] if isinstance(arg, Mapping) and "$each" in arg else [arg]
        values = list(current) if isinstance(current, list) else []
        for item in items:
            if op == "$push" or not any(_equal(item, v) for v in values):
                values.append(_pushed(item) if by_path else item)
        _set(doc, path, values)
    elif op == "$pull":
        if isinstance(current, list):
            _set(doc, path, [v for v in current if not _condition(v, arg)])
    else:
        raise NotImplementedError(f"update operator {op} is not in the memory fake")


def _seed(flt: Mapping[str, Any]) -> Doc:
    """The document an upsert starts from: the filter's equalities."""
    doc: Doc = {}
    for key, cond in flt.items():
        if key.startswith("$"):
            continue
        if _is_operators(cond):
            if "$eq" in cond:
                _set(doc, key, _stored(cond["$eq"]))
        else:
            _set(doc, key, _stored(cond))
    return doc


def _is_replacement(update: Mapping[str, Any]) -> bool:
    return not any(str(k).startswith("$") for k in update)


# -- indexes -----------------------------------------------------------------------------------


def _index_keys(keys: Any) -> list[tuple[str, Any]]:
    if isinstance(keys, str):
        return [(keys, 1)]
    if isinstance(keys, Mapping):
        return list(keys.items())
    return [(k, d) for k, d in keys]


def _index_name(keys: list[tuple[str, Any]]) -> str:
    return "_".join(f"{k}_{d}" for k, d in keys)


class _Index:
    def __init__(self, keys: list[tuple[str, Any]], options: Mapping[str, Any]) -> None:
        self.keys = keys
        self.options = dict(options)
        self.unique = bool(options.get("unique"))
        self.sparse = bool(options.get("sparse"))
        self.partial = options.get("partialFilterExpression")

    def key_of(self, doc: Doc) -> Any:
        """The unique key of `doc` in this index, None when the index does not cover it."""
        if self.partial is not None and not matches(doc, self.partial):
            return None
        values = [_get(doc, k) for k, _ in self.keys]
        if self.sparse and all(v is _MISSING for v in values):
            return None
        if any(v is _MISSING or v is None for v in values):
            # nx-27017 (a SQLite unique index): a missing or null field never collides, where
            # MongoDB indexes it as null and refuses a second such document.
            return None
        return tuple(_freeze(v) for v in values)

    def info(self) -> Doc:
        out: Doc = {"v": 2, "key": list(self.keys)}
        out.update({k: v for k, v in self.options.items() if k != "name"})
        return out


# -- collection --------------------------------------------------------------------------------


class MemoryCollection:
    """An `AsyncCollection` in memory (see the module's text for what it covers)."""

    def __init__(self, database: MemoryDatabase, name: str) -> None:
        self.database = database
        self.name = name
        self.full_name = f"{database.name}.{name}"
        self._docs: dict[Any, Doc] = {}  # by frozen _id, in insertion (natural) order
        self._indexes: dict[str, _Index] = {}
        #: Per unique index, its keys and the (frozen) _id holding each.
        self._holders: dict[str, dict[Any, Any]] = {}

    def __repr__(self) -> str:
        return f"MemoryCollection({self.full_name!r}, {len(self._docs)} documents)"

    def with_options(self, **_: Any) -> MemoryCollection:
        return self

    def _touch(self) -> None:
        self.database._created.add(self.name)

    # -- writing (every write goes through _check, which enforces the unique indexes) ----------

    def _refuse(self, index: str) -> DuplicateKeyError:
        message = f"E11000 duplicate key error collection: {self.full_name} index: {index}"
        return DuplicateKeyError(message, DUPLICATE_KEY, {"code": DUPLICATE_KEY, "errmsg": message})

    def _put(self, doc: Doc, replacing: Any = _MISSING) -> None:
        """Store a new document, or `doc` in place of the one whose frozen _id is `replacing`,
        unless a unique index (or `_id`) refuses it."""
        key = _freeze(doc["_id"])
        if replacing is _MISSING and key in self._docs:
            raise self._refuse("_id_")
        if replacing is not _MISSING and replacing != key:
            raise NotImplementedError("an update may not change _id")
        for name, holders in self._holders.items():
            mine = self._indexes[name].key_of(doc)
            if mine is not None and holders.get(mine, key) != key:
                raise self._refuse(name)
        if replacing is not _MISSING:
            self._unindex(self._docs[replacing])  # and keeps its place in natural order
        self._docs[key] = doc
        for name, holders in self._holders.items():
            mine = self._indexes[name].key_of(doc)
            if mine is not None:
                holders[mine] = key
        self._touch()

    def _unindex(self, doc: Doc) -> None:
        key = _freeze(doc["_id"])
        for name, holders in self._holders.items():
            mine = self._indexes[name].key_of(doc)
            if mine is not None and holders.get(mine) == key:
                del holders[mine]

    def _remove(self, doc: Doc) -> None:
        self._unindex(doc)
        del self._docs[_freeze(doc["_id"])]

    async def insert_one(self, document: Doc, **_: Any) -> InsertOneResult:
        if "_id" not in document:
            document["_id"] = ObjectId()  # pymongo sets it on the caller's document too
        self._put(_stored(document))
        return InsertOneResult(document["_id"], True)

    async def insert_many(
        self, documents: Iterable[Doc], ordered: bool = True, **_: Any
    ) -> InsertManyResult:
        docs = list(documents)
        result = await self.bulk_write([InsertOne(d) for d in docs], ordered=ordered)
        del result
        return InsertManyResult([d["_id"] for d in docs], True)

    def _matching(self, flt: Mapping[str, Any] | None) -> list[Doc]:
        return [d for d in self._docs.values() if matches(d, flt)]

    def _first(self, flt: Mapping[str, Any] | None, sort: Any = None) -> Doc | None:
        found = self._matching(flt)
        if sort:
            found = _sorted(found, _sort_spec(sort))
        return found[0] if found else None

    def _update_doc(self, doc: Doc, update: Mapping[str, Any]) -> bool:
        """Apply `update` to a stored document; True when it changed."""
        changed = copy.deepcopy(doc)
        if _is_replacement(update):
            changed = {"_id": doc["_id"], **_stored(update)}
        else:
            _apply_update(changed, update, inserting=False, by_path=True)
        # nx-27017 counts a document as modified when it differs by Python's equality (so
        # `$set` of True over a stored true reports 0, and stores 1: see _by_path), and a
        # replacement as modified always, even by the same content (MongoDB: 0).
        modified = _is_replacement(update) or changed != doc
        if modified or _freeze(changed) != _freeze(doc):
            self._put(changed, replacing=_freeze(doc["_id"]))
        return modified

    def _upsert(
        self, flt: Mapping[str, Any], update: Mapping[str, Any], by_path: bool = False
    ) -> Doc:
        """The document an upsert inserts. `by_path`: nx-27017's find_one_and_update, which
        inserts the filter's equalities and then updates that document (no $setOnInsert)."""
        if _is_replacement(update):
            doc = _stored(update)
            seeded = _seed(flt)
            if "_id" in seeded:
                doc.setdefault("_id", seeded["_id"])
        else:
            doc = _seed(flt)
            _apply_update(doc, update, inserting=not by_path, by_path=by_path)
        doc.setdefault("_id", ObjectId())
        doc = {"_id": doc.pop("_id"), **doc}
        self._put(doc)
        return doc

    def _update(
        self, flt: Mapping[str, Any], update: Mapping[str, Any], upsert: bool, many: bool
    ) -> Doc:
        """One update command's raw result (the server's reply fields pymongo reads)."""
        targets = self._matching(flt) if many else [d for d in [self._first(flt)] if d]
        if not targets:
            if upsert:
                doc = self._upsert(flt, update)
                return {"n": 1, "nModified": 0, "upserted": doc["_id"], "updatedExisting": False}
            return {"n": 0, "nModified": 0, "updatedExisting": False}
        modified = sum(self._update_doc(d, update) for d in targets)
        return {"n": len(targets), "nModified": modified, "updatedExisting": True}

    async def update_one(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], upsert: bool = False, **_: Any
    ) -> UpdateResult:
        if _is_replacement(update):
            raise ValueError("update only works with $ operators")
        return UpdateResult(self._update(filter, update, upsert, many=False), True)

    async def update_many(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], upsert: bool = False, **_: Any
    ) -> UpdateResult:
        return UpdateResult(self._update(filter, update, upsert, many=True), True)

    async def replace_one(
        self, filter: Mapping[str, Any], replacement: Doc, upsert: bool = False, **_: Any
    ) -> UpdateResult:
        if not _is_replacement(replacement):
            raise ValueError("replacement can not include $ operators")
        return UpdateResult(self._update(filter, replacement, upsert, many=False), True)

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = False,
        **_: Any,
    ) -> Doc | None:
        """`return_document`: ReturnDocument.AFTER (True) or BEFORE (False, the default)."""
        before = self._first(filter, sort)
        if before is None:
            if not upsert:
                return None
            doc = self._upsert(filter, update, by_path=True)
            return project(doc, projection) if return_document else None
        snapshot = copy.deepcopy(before)
        self._update_doc(before, update)
        after = self._docs[_freeze(before["_id"])]
        return project(after if return_document else snapshot, projection)

    async def find_one_and_delete(
        self, filter: Mapping[str, Any], projection: Any = None, sort: Any = None, **_: Any
    ) -> Doc | None:
        doc = self._first(filter, sort)
        if doc is None:
            return None
        self._remove(doc)
        return project(doc, projection)

    async def delete_one(self, filter: Mapping[str, Any], **_: Any) -> DeleteResult:
        doc = self._first(filter)
        if doc is not None:
            self._remove(doc)
        return DeleteResult({"n": int(doc is not None)}, True)

    async def delete_many(self, filter: Mapping[str, Any], **_: Any) -> DeleteResult:
        found = self._matching(filter)
        for doc in found:
            self._remove(doc)
        return DeleteResult({"n": len(found)}, True)

    async def bulk_write(
        self, requests: Iterable[Any], ordered: bool = True, **_: Any
    ) -> BulkWriteResult:
        """Each write in turn; duplicate keys are collected (unordered) or stop (ordered) and
        raise one BulkWriteError with MongoDB's `details`, after the other writes landed."""
        totals: Doc = {
            "writeErrors": [],
            "writeConcernErrors": [],
            "nInserted": 0,
            "nUpserted": 0,
            "nMatched": 0,
            "nModified": 0,
            "nRemoved": 0,
            "upserted": [],
        }
        for i, op in enumerate(requests):
            try:
                self._one_bulk_op(i, op, totals)
            except DuplicateKeyError as exc:
                totals["writeErrors"].append(
                    {"index": i, "code": DUPLICATE_KEY, "errmsg": str(exc), "op": _op_doc(op)}
                )
                if ordered:
                    break
        if totals["writeErrors"]:
            raise BulkWriteError(totals)
        return BulkWriteResult(totals, True)

    def _one_bulk_op(self, i: int, op: Any, totals: Doc) -> None:
        if isinstance(op, InsertOne):
            doc = op._doc
            if "_id" not in doc:
                doc["_id"] = ObjectId()
            self._put(_stored(doc))
            totals["nInserted"] += 1
            return
        if isinstance(op, (DeleteOne, DeleteMany)):
            found = self._matching(op._filter)
            for doc in found if isinstance(op, DeleteMany) else found[:1]:
                self._remove(doc)
                totals["nRemoved"] += 1
            return
        if not isinstance(op, (UpdateOne, UpdateMany, ReplaceOne)):
            raise NotImplementedError(f"bulk operation {type(op).__name__}")
        raw = self._update(op._filter, op._doc, bool(op._upsert), isinstance(op, UpdateMany))
        if "upserted" in raw:
            totals["nUpserted"] += 1
            totals["upserted"].append({"index": i, "_id": raw["upserted"]})
        else:
            totals["nMatched"] += raw["n"]
            totals["nModified"] += raw["nModified"]

    # -- reading -------------------------------------------------------------------------------

    def find(
        self,
        filter: Mapping[str, Any] | None = None,
        projection: Any = None,
        *,
        sort: Any = None,
        skip: int = 0,
        limit: int = 0,
        **_: Any,
    ) -> MemoryCursor:
        flt = dict(filter or {})

        def produce(order: list[tuple[str, int]]) -> list[Doc]:
            found = self._matching(flt)
            return [project(d, projection) for d in (_sorted(found, order) if order else found)]

        cursor = MemoryCursor(produce).skip(skip).limit(limit)
        return cursor.sort(sort) if sort else cursor

    async def find_one(
        self, filter: Any = None, projection: Any = None, *, sort: Any = None, **_: Any
    ) -> Doc | None:
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        doc = self._first(filter, sort)
        return None if doc is None else project(doc, projection)

    async def count_documents(self, filter: Mapping[str, Any], **_: Any) -> int:
        return len(self._matching(filter))

    async def estimated_document_count(self, **_: Any) -> int:
        return len(self._docs)

    async def distinct(self, key: str, filter: Mapping[str, Any] | None = None) -> list[Any]:
        seen: dict[Any, Any] = {}
        for doc in self._matching(filter):
            for value in _distinct_values(doc, key):
                seen.setdefault(_freeze(value), value)
        return [_stored(v) for v in seen.values()]

    async def aggregate(self, pipeline: list[Mapping[str, Any]], **_: Any) -> MemoryCursor:
        rows = [_stored(d) for d in self._docs.values()]
        for stage in pipeline:
            rows = _stage(rows, stage)
        return MemoryCursor(lambda order: _sorted(rows, order) if order else rows)

    # -- indexes -------------------------------------------------------------------------------

    async def create_index(self, keys: Any, **options: Any) -> str:
        spec = _index_keys(keys)
        name = options.get("name") or _index_name(spec)
        index = _Index(spec, options)
        if index.unique:
            holders: dict[Any, Any] = {}
            for doc_key, doc in self._docs.items():
                mine = index.key_of(doc)
                if mine is not None and holders.setdefault(mine, doc_key) != doc_key:
                    raise self._refuse(name)
            self._holders[name] = holders
        self._indexes[name] = index
        self._touch()
        return name

    async def index_information(self) -> dict[str, Doc]:
        info = {"_id_": {"v": 2, "key": [("_id", 1)]}}
        info.update({name: index.info() for name, index in self._indexes.items()})
        return info

    async def drop_index(self, name: str, **_: Any) -> None:
        self._indexes.pop(name, None)
        self._holders.pop(name, None)

    async def drop_indexes(self, **_: Any) -> None:
        self._indexes.clear()
        self._holders.clear()

    async def drop(self, **_: Any) -> None:
        self._docs.clear()
        self._indexes.clear()
        self._holders.clear()
        self.database._created.discard(self.name)

    # -- for tests -----------------------------------------------------------------------------

    def documents(self) -> list[Doc]:
        """Copies of every stored document, in natural order (a test's look at the state)."""
        return [_stored(d) for d in self._docs.values()]


def _distinct_values(doc: Doc, key: str) -> list[Any]:
    value = _get(doc, key)
    if value is _MISSING:
        return []
    return list(value) if isinstance(value, list) else [value]


def _op_doc(op: Any) -> Doc:
    if isinstance(op, InsertOne):
        return _stored(op._doc)
    return {"q": _stored(op._filter)}


# -- aggregation -------------------------------------------------------------------------------


def _expr(doc: Doc, expr: Any) -> Any:
    """A `$group`/`$project` expression: "$field", a constant, or a document of them."""
    if isinstance(expr, str) and expr.startswith("$"):
        value = _get(doc, expr[1:])
        return None if value is _MISSING else value
    if isinstance(expr, Mapping):
        if _is_operators(expr):
            raise NotImplementedError(f"expression {list(expr)} is not in the memory fake")
        return {k: _expr(doc, v) for k, v in expr.items()}
    return expr


def _accumulate(op: str, values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if op == "$sum":
        # nx-27017: null when no value is a number (MongoDB: 0).
        return sum(numbers) if numbers else None
    if op == "$avg":
        return sum(numbers) / len(numbers) if numbers else None
    present = [v for v in values if v is not None]
    if op == "$max":
        return max(present, key=_order_key) if present else None
    if op == "$min":
        return min(present, key=_order_key) if present else None
    if op == "$first":
        return values[0] if values else None
    if op == "$last":
        return values[-1] if values else None
    if op == "$push":
        return values
    if op == "$addToSet":
        return list({_freeze(v): v for v in values}.values())
    raise NotImplementedError(f"accumulator {op} is not in the memory fake")


def _group(rows: list[Doc], spec: Mapping[str, Any]) -> list[Doc]:
    groups: dict[Any, tuple[Any, list[Doc]]] = {}
    for row in rows:
        key = _expr(row, spec["_id"])
        groups.setdefault(_freeze(key), (key, []))[1].append(row)
    out = []
    for key, members in groups.values():
        result: Doc = {"_id": key}
        for field, acc in spec.items():
            if field == "_id":
                continue
            [(op, arg)] = acc.items()
            result[field] = _accumulate(op, [_expr(m, arg) for m in members])
        out.append(result)
    return out


def _stage(rows: list[Doc], stage: Mapping[str, Any]) -> list[Doc]:
    [(name, arg)] = stage.items()
    if name == "$match":
        return [r for r in rows if matches(r, arg)]
    if name == "$group":
        return _group(rows, arg)
    if name == "$sort":
        return _sorted(rows, _sort_spec(arg))
    if name == "$skip":
        return rows[arg:]
    if name == "$limit":
        return rows[:arg]
    if name == "$count":
        return [{arg: len(rows)}]  # nx-27017: also when nothing matched (MongoDB: none)
    if name == "$project":
        return [project(r, arg) for r in rows]
    raise NotImplementedError(f"aggregation stage {name} is not in the memory fake")


# -- database and client -----------------------------------------------------------------------


#: Set while fast tests run mirrored on nx-27017 (tests/fakes/mirror.py, `--mirror-memory`):
#: wraps each database a test builds with `MemoryDatabase(name)`.
_mirrored: Callable[[MemoryDatabase], Any] | None = None


class MemoryDatabase:
    """An `AsyncDatabase` in memory: `db["name"]` (or `db.name`) is a MemoryCollection.

    Under the mirror, `MemoryDatabase(name)` gives this database wrapped in a
    `tests.fakes.mirror.MirrorDatabase` (a client's databases are never wrapped)."""

    def __new__(cls, name: str = "test", client: MemoryClient | None = None) -> Any:
        db = super().__new__(cls)
        if client is None and _mirrored is not None:
            db.__init__(name, client)  # type: ignore[misc]
            return _mirrored(db)
        return db

    def __init__(self, name: str = "test", client: MemoryClient | None = None) -> None:
        self.name = name
        self.client = client
        self._collections: dict[str, MemoryCollection] = {}
        self._created: set[str] = set()  # as on MongoDB: by a first write or index

    def __getitem__(self, name: str) -> MemoryCollection:
        if name not in self._collections:
            self._collections[name] = MemoryCollection(self, name)
        return self._collections[name]

    def __getattr__(self, name: str) -> MemoryCollection:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def get_collection(self, name: str, **_: Any) -> MemoryCollection:
        return self[name]

    def with_options(self, **_: Any) -> MemoryDatabase:
        return self

    async def list_collection_names(self, **_: Any) -> list[str]:
        return sorted(self._created)

    async def drop_collection(self, name: str, **_: Any) -> None:
        await self[name].drop()

    async def create_collection(self, name: str, **_: Any) -> MemoryCollection:
        self[name]._touch()
        return self[name]

    async def command(self, command: Any, **_: Any) -> Doc:
        name = command if isinstance(command, str) else next(iter(command))
        if name == "ping":
            return {"ok": 1.0}
        raise NotImplementedError(f"command {name} is not in the memory fake")


class MemoryClient:
    """An `AsyncMongoClient` in memory: `client["db"]` is a MemoryDatabase."""

    def __init__(self) -> None:
        self._databases: dict[str, MemoryDatabase] = {}

    def __getitem__(self, name: str) -> MemoryDatabase:
        if name not in self._databases:
            self._databases[name] = MemoryDatabase(name, self)
        return self._databases[name]

    def get_database(self, name: str = "test", **_: Any) -> MemoryDatabase:
        return self[name]

    async def list_database_names(self) -> list[str]:
        return sorted(n for n, db in self._databases.items() if db._created)

    async def drop_database(self, name: str) -> None:
        self._databases.pop(name, None)

    async def close(self) -> None:
        return None
