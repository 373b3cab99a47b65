"""MongoDB access shared by every service: client, duplicate-key handling, nx-27017 differences."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteError,
)

from shared import clock

DUPLICATE_KEY = 11000
#: Errors after which the same operation may succeed when retried (the server comes back).
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    ServerSelectionTimeoutError,
)


def connect_mongo(url: str) -> AsyncMongoClient[dict[str, Any]]:
    # Short selection timeout: a request while MongoDB is away fails fast with 503 instead of
    # hanging for the driver's default 30 s; the driver reconnects by itself.
    return AsyncMongoClient(
        url, serverSelectionTimeoutMS=5000, connectTimeoutMS=3000, tz_aware=True
    )


def is_duplicate_key(exc: BaseException) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, (WriteError, OperationFailure)):
        return exc.code == DUPLICATE_KEY
    return False


def only_duplicates(exc: BulkWriteError) -> bool:
    """True when every write error of an unordered bulk write is a duplicate key."""
    errors = exc.details.get("writeErrors", [])
    return (
        bool(errors)
        and all(e.get("code") == DUPLICATE_KEY for e in errors)
        and not exc.details.get("writeConcernErrors")
    )


def projected(doc: dict[str, Any] | None, path: str) -> Any:
    """The value at a dotted `path` of a document read with a projection naming that path
    (None when absent).

    nx-27017 difference: a dotted projection (`{"seats.s1": 1}`) comes back as a flat key
    (`{"seats.s1": 1}`) there, as nested documents (`{"seats": {"s1": 1}}`) from MongoDB;
    this reads either (tests/integration/test_mongo_conformance.py states MongoDB's).
    """
    if doc is None:
        return None
    if path in doc:
        return doc[path]
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


async def ping(db: AsyncDatabase[dict[str, Any]], timeout: float | None = None) -> bool:
    """Whether the server answers a ping (within `timeout` seconds, when given)."""
    try:
        await asyncio.wait_for(db.command("ping"), timeout)
        return True
    except Exception:
        return False


# The clock's helpers, where the store's callers have always found them.
epoch_ms = clock.epoch_ms


async def is_embedded_server(db: AsyncDatabase[dict[str, Any]]) -> bool:
    """Whether `db` lives on nx-27017 (the embedded server of `sarafan up` and the tests)."""
    try:
        status = await db.command("serverStatus")
    except Exception:
        return False
    return status.get("process") == "nx_27017"


async def expiring_index(
    coll: AsyncCollection[dict[str, Any]], field: str, seconds: int, *, kept_by_job: bool
) -> None:
    """A TTL index on `field` on MongoDB. On nx-27017, where a collection with a TTL index is
    purged on every read by a range delete that grows with the collection (measured: 40% of
    the server's time while member-joined was absorbed into 300,000 processed-event records),
    a plain index instead when a periodic job of ours deletes the old records
    (`kept_by_job`, see `Runtime.expire`)."""
    if kept_by_job and await is_embedded_server(coll.database):
        for name, spec in (await coll.index_information()).items():
            if spec.get("key") == [(field, 1)] and "expireAfterSeconds" in spec:
                await coll.drop_index(name)  # made by an earlier version
        await coll.create_index(field)
        return
    await coll.create_index(field, expireAfterSeconds=seconds)
