"""Filters both MongoDB and nx-27017 serve from an index, and the counts, keys and cursors on them.

Why this module exists (docs/patterns.md, "Queries that stay fast"): nx-27017 builds every
secondary index on `json_extract(data, '$.field')`. A filter written `{"f": v}` or
`{"f": {"$in": [...]}}` becomes SQL with a `json_each` subquery (MongoDB's array semantics),
which no index serves: a full scan. `{"f": {"$eq": v}}` is a plain equality and uses the index;
`$or`/`$and`/`$nor` and `$type` are evaluated in Python over every document. On MongoDB
`{"f": v}` and `{"f": {"$eq": v}}` mean the same, so the `$eq` form is right on both servers.

So every store builds its filters through `where()`: equality becomes `$eq`, only operators
that both servers index are accepted, and a set of keys on a secondary field is one `$eq`
query per key (`find_each`), never `$in`. `_id` is the primary key on both servers: plain
equality and `$in` on `_id` are indexed everywhere.

`count_documents` on nx-27017 is evaluated in Python (760 ms on 30,000 documents); the
`$match` + `$group` of `count()` runs in SQL over the index (a few ms), and on MongoDB it is
the same index scan `count_documents` would do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from shared.documents import Doc

Collection = AsyncCollection[Doc]

#: Operators on a secondary field that both servers serve from an index (ranges and
#: equality) or check on the rows the index found (`$exists`).
INDEXED_OPERATORS = frozenset({"$eq", "$gt", "$gte", "$lt", "$lte", "$exists"})
#: Operators accepted on `_id`, the primary key.
ID_OPERATORS = INDEXED_OPERATORS | {"$in"}
#: Beside an `_id` equality the server finds the one row by its key and checks the rest on it,
#: so these may guard a write too (`$nin`, not `$ne`: see docs/patterns.md, write-filter traps).
GUARD_OPERATORS = INDEXED_OPERATORS | {"$in", "$nin"}


class UnindexedFilter(ValueError):
    """A filter shape that nx-27017 would answer with a full scan (a programming error)."""


def where(fields: Mapping[str, Any] | None = None, /, **more: Any) -> Doc:
    """A filter in the form both servers index.

    `where({"status": "active", "created_ms": {"$gte": t}})` gives
    `{"status": {"$eq": "active"}, "created_ms": {"$gte": t}}`. Keyword arguments are the
    same for field names that are identifiers. Lists as values are refused: equality with an
    array means "contains" on MongoDB and "equals the JSON text" on nx-27017.
    """
    given = {**(fields or {}), **more}
    by_key = "_id" in given and _is_equality(given["_id"])
    result: Doc = {}
    for name, value in given.items():
        if name.startswith("$"):
            raise UnindexedFilter(f"{name} is evaluated without an index; split the query")
        result[name] = _condition(name, value, by_key)
    return result


def _is_equality(value: Any) -> bool:
    if isinstance(value, Mapping):
        return set(value) == {"$eq"}
    return not isinstance(value, (list, tuple, set))


def _condition(name: str, value: Any, by_key: bool = False) -> Any:
    if name == "_id":
        allowed = ID_OPERATORS
    else:
        allowed = GUARD_OPERATORS if by_key else INDEXED_OPERATORS
    if isinstance(value, Mapping) and value and all(str(k).startswith("$") for k in value):
        unknown = set(value) - allowed
        if unknown:
            raise UnindexedFilter(
                f"{name}: {sorted(unknown)} cannot use an index on nx-27017 "
                "(one $eq query per key instead of $in; no $ne/$nin/$type)"
            )
        return dict(value)
    if isinstance(value, (list, tuple, set)):
        raise UnindexedFilter(f"{name}: equality with a list; query one value at a time")
    if name == "_id":
        return value
    return {"$eq": value}


async def find_each(
    collection: Collection,
    field: str,
    values: Iterable[Any],
    also: Mapping[str, Any] | None = None,
    projection: Mapping[str, Any] | None = None,
) -> list[Doc]:
    """Documents whose `field` is one of `values`: one indexed `$eq` query per value, run
    concurrently (the driver pipelines them), instead of an unindexed `$in`."""
    keys = list(dict.fromkeys(values))
    if field == "_id":
        if not keys:
            return []
        return await collection.find(
            where({"_id": {"$in": keys}}, **(also or {})), projection
        ).to_list(None)

    async def one(key: Any) -> list[Doc]:
        query = where({field: key, **(also or {})})
        return await collection.find(query, projection).to_list(None)

    found = await asyncio.gather(*(one(k) for k in keys))
    return [doc for docs in found for doc in docs]


async def by_ids(
    collection: Collection, ids: Iterable[Any], projection: Mapping[str, Any] | None = None
) -> dict[Any, Doc]:
    """Documents by primary key (indexed on both servers), keyed by `_id`."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    found = collection.find({"_id": {"$in": wanted}}, projection)
    return {doc["_id"]: doc async for doc in found}


async def count(collection: Collection, fields: Mapping[str, Any] | None = None) -> int:
    """How many documents match, counted over the index (see the module docstring)."""
    pipeline: list[Doc] = [
        {"$match": where(fields or {})},
        {"$group": {"_id": None, "n": {"$sum": 1}}},
    ]
    rows = await (await collection.aggregate(pipeline)).to_list(1)
    return int(rows[0]["n"]) if rows else 0


async def total(collection: Collection, fields: Mapping[str, Any], field: str) -> float:
    """The sum of `field` over the matching documents, computed by the server."""
    pipeline: list[Doc] = [
        {"$match": where(fields)},
        {"$group": {"_id": None, "total": {"$sum": f"${field}"}}},
    ]
    rows = await (await collection.aggregate(pipeline)).to_list(1)
    return float(rows[0]["total"] or 0) if rows else 0.0


# -- sort keys: one unique, never-changing string per listing ---------------------------------
#
# A listing ordered by (time, id) with a cursor needs `$or` to say "after (t, id)" on two
# fields, which nx-27017 evaluates in Python over the whole collection. A single string that
# sorts the same way — the time zero-padded, then the id — makes the cursor one range on one
# indexed field (`{"order_key": {"$lt": cursor}}`), on both servers.

MS_DIGITS = 13


def setting(fields: Mapping[str, Any], unset: Iterable[str] = ()) -> Doc:
    """The update that sets `fields` and removes the fields named in `unset` (no `$unset` when
    there are none: an empty one is an error on MongoDB)."""
    update: Doc = {"$set": dict(fields)}
    if gone := dict.fromkeys(unset, ""):
        update["$unset"] = gone
    return update


def order_key(ms: int, ident: str) -> str:
    """`<epoch ms, 13 digits>:<id>`: sorts by time, then id; unique when the id is."""
    return f"{max(int(ms), 0):0{MS_DIGITS}d}:{ident}"


def descending_number(value: float) -> str:
    """16 hex digits whose ascending string order is the number's descending order
    (an IEEE 754 double with its bits arranged to sort; -0.0 sorts with 0.0)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", float(value) + 0.0))
    ascending = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | 1 << 63
    return f"{ascending ^ 0xFFFFFFFFFFFFFFFF:016x}"


def ascending_number(value: float) -> str:
    """16 hex digits whose ascending string order is the number's ascending order."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", float(value) + 0.0))
    ascending = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | 1 << 63
    return f"{ascending:016x}"


# -- cursors: opaque to clients, strict on the way back ----------------------------------------


class InvalidCursor(ValueError):
    """A cursor this service did not hand out (tampered, truncated, from another listing)."""


#: What a decoded cursor may be: printable ASCII without spaces, bounded.
_CURSOR_TEXT = re.compile(r"^[\x21-\x7e]{1,400}$")
CURSOR_MAX = 600


def encode_cursor(key: str) -> str:
    """The opaque `next_cursor` for a sort key (or an offset written as digits)."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, pattern: re.Pattern[str] | None = None) -> str:
    """The sort key inside a cursor; InvalidCursor (HTTP 422) for anything else."""
    if not cursor or len(cursor) > CURSOR_MAX or not cursor.isascii():
        raise InvalidCursor("cursor is not one this service returned")
    try:
        key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("cursor is not one this service returned") from exc
    if not _CURSOR_TEXT.fullmatch(key) or (pattern is not None and not pattern.fullmatch(key)):
        raise InvalidCursor("cursor is not one this service returned")
    return key


ORDER_KEY_RE = re.compile(rf"^\d{{{MS_DIGITS}}}:[\x21-\x7e]+$")
OFFSET_RE = re.compile(r"^\d{1,7}$")


def decode_offset(cursor: str | None) -> int:
    """An offset cursor (plain digits, for rankings recomputed on read): 0 without one."""
    if cursor is None:
        return 0
    if not OFFSET_RE.fullmatch(cursor):
        raise InvalidCursor("cursor is not one this service returned")
    return int(cursor)
