"""After an erasure, the embedded store's files keep no copy of what was erased.

nx-27017 keeps each database in SQLite with a write-ahead log: a commit appends page images to
`<db>.db-wal`, and a checkpoint copies them into the database file but leaves the old images in
the -wal file (nx-27017's `wal_checkpoint` is SQLite's PASSIVE kind: no wire command truncates
the file), so the page that held an erased member's email stays readable there until later
writes happen to reach the same offset. The database file itself is clean once checkpointed:
SQLite built with `secure_delete` (Debian's is) zeroes what a delete frees.

A `vacuum` is one transaction that writes every page of the database again, from the start of
the log file after a checkpoint: it overwrites the log up to the database's size. The log may
be longer than the database (an earlier vacuum of a larger database, a large transaction), so
the scrub first pads the database to at least the longest the log has been (kept in the
`scrub_state` document; 32 MiB before any scrub: the automatic checkpoint keeps the log near
4 MiB, and the largest transaction of this platform is a batch of a thousand deliveries), then
vacuums, then drops the padding. Every byte of the log file then holds pages written after the
erasure. Measured on nx-27017 0.8.1: 1.3 s for a small database (the padding), 0.55 s for a
70 MB one; that server answers nothing else meanwhile, and the log file stays as long as the
largest database scrubbed.

A service that erased a member scrubs its database a few seconds later
(`SARAFAN_ERASURE_SCRUB_SECONDS`), so that a burst of erasures costs one scrub. On MongoDB these
commands do not exist ("no such command"): the scrubber stops, and what WiredTiger keeps until
it reuses the space is named in docs/members.md.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

log = logging.getLogger("sarafan.scrub")

#: MongoDB's code for a command it does not know.
COMMAND_NOT_FOUND = 59
#: After a failed scrub (another statement held the file, the server away), the next try.
RETRY_SECONDS = 30.0


#: The longest the log is assumed to have been before the first scrub (see the module's text).
LOG_FLOOR_BYTES = 32 * 1024 * 1024
PAD_DOCUMENT_BYTES = 1024 * 1024
STATE, PADDING = "scrub_state", "scrub_padding"


async def scrub(db: AsyncDatabase[dict[str, Any]]) -> bool:
    """Overwrite every byte of the database's log file with pages written now (the module's
    text says how); False when the server has no such commands (MongoDB: nothing to do)."""
    try:
        await db.command({"wal_checkpoint": 1})
    except OperationFailure as exc:
        if exc.code == COMMAND_NOT_FOUND or "no such command" in str(exc).lower():
            return False
        raise
    state = await db[STATE].find_one({"_id": "log"}) or {}
    longest = max(int(state.get("longest_bytes") or 0), LOG_FLOOR_BYTES)
    size = int((await db.command("dbStats")).get("storageSize") or 0)
    pad_documents = max(0, longest - size) // PAD_DOCUMENT_BYTES + 1
    await db[PADDING].insert_many(
        [{"_id": i, "pad": "0" * PAD_DOCUMENT_BYTES} for i in range(pad_documents)]
    )
    await db.command({"vacuum": 1})  # one transaction: the log rewritten up to `longest`
    await db[PADDING].drop()
    await db.command({"wal_checkpoint": 1})
    written = size + pad_documents * PAD_DOCUMENT_BYTES
    await db[STATE].update_one({"_id": "log"}, {"$max": {"longest_bytes": written}}, upsert=True)
    return True


class Scrubber:
    """Scrubs one service's database a little after each erasure (`kick`), once per burst.

    The runtime kicks it after a consumer handled a member-left with erasure; the members
    service kicks it when it erases a member itself."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], delay_seconds: float) -> None:
        self.db = db
        self.delay_seconds = delay_seconds
        #: False once the server said it has no such commands (MongoDB).
        self.supported = True
        #: How many scrubs ran (tests wait on it).
        self.done = 0
        self._wanted = asyncio.Event()

    def kick(self) -> None:
        """An erasure was written: scrub after the delay (kicks meanwhile join that scrub)."""
        if self.supported:
            self._wanted.set()

    async def run(self) -> None:
        while self.supported:
            await self._wanted.wait()
            # Let the burst end (and the erasure's own later writes land) before the one scrub.
            await asyncio.sleep(self.delay_seconds)
            self._wanted.clear()
            try:
                self.supported = await scrub(self.db)
                self.done += 1
                log.info("scrubbed the database after an erasure")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scrubbing after an erasure failed (%r); again later", exc)
                self._wanted.set()
                await asyncio.sleep(RETRY_SECONDS)
