"""Writing an import: its rows a chunk at a time, each member with its member-joined.

Rows are validated (importer.py) and written a chunk at a time: the chunk's listing entries,
then its members, each carrying its event, in one unordered bulk write, staged together and
committed at once (what follows depends on it); the duplicate-key errors say which rows were
refused by a unique index. Each of those is looked up by its contacts: a member who has one
of them means the row already exists (or, when that member came from an earlier row of the
same file, that the row repeats it); no holder means the referral code collided, and only
those rows are written again with a new code. Each of these commits waits until the events
of what it wrote are published (`wait`: it paces the import, a chunk's events in one
publish); the relay's sweeper covers a crash in between. Then the entries of the rows not
created are removed. Two chunks are written at once on the one unit of work: each stages and
commits with no pause in between, so a commit never takes the other chunk's staged writes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from services.members import domain, importer
from services.members.schemas import ChunkReport, ImportReport, RejectedRow
from services.members.store import MemberStore, MembersUnitOfWork
from shared.clock import Clock
from shared.documents import Doc

Row = tuple[int, Doc | importer.RowRejected]

#: Rows validated and written together.
CHUNK_ROWS = 1000
#: Chunks being written at once (one written while the next is validated).
IN_FLIGHT = 2
#: Rows validated between two turns of the event loop.
YIELD_EVERY = 50
#: Rounds of new referral codes for rows whose code collided (23^7 codes: one is plenty).
CODE_ROUNDS = 5


@dataclass
class ChunkResult:
    first_row: int
    last_row: int
    created: list[str] = field(default_factory=list)
    existing: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)

    def report(self) -> ChunkReport:
        return ChunkReport(
            first_row=self.first_row,
            last_row=self.last_row,
            created=len(self.created),
            existing=self.existing,
            rejected=len(self.rejected),
        )


class Importer:
    """One import request: chunks validated here while the previous one is written."""

    def __init__(
        self,
        store: MemberStore,
        uow: MembersUnitOfWork,
        phone_region: str | None,
        clock: Clock,
        *,
        may_grant: bool = False,
    ) -> None:
        self.store = store
        #: The use cases' clock: the time of each chunk's member-joined events.
        self.clock = clock
        #: Committed after each chunk, so a chunk's events go out while the next is written.
        self.uow = uow
        self.phone_region = phone_region
        #: Whether the caller's key may give the coordinator and staff roles (`admin`).
        self.may_grant = may_grant

    async def run(
        self, text: str, kind: str, *, file_id: str, welcome: bool, first_row: int = 1
    ) -> ImportReport:
        rows = importer.count_rows(text, kind)
        if rows > importer.MAX_ROWS:
            raise importer.ImportRefused(
                413,
                "too_many_rows",
                f"{rows} rows; at most {importer.MAX_ROWS} per request (the CLI splits a file)",
            )
        # Within the request, the first row with a contact keeps it; later rows are rejected.
        seen: dict[tuple[str, str], int] = {}
        chunks: list[ChunkResult] = []
        # A pipeline: while the database writes one chunk, this process validates the next
        # (the two run on different cores). Contacts are checked against `seen` in row order
        # during validation, so the order in which chunks are written does not matter.
        writing: deque[asyncio.Task[None]] = deque()
        try:
            for chunk in _chunked(importer.rows_of(text, kind, first_row), CHUNK_ROWS):
                result = ChunkResult(chunk[0][0], chunk[-1][0])
                ready = await self._prepare(chunk, seen, result, file_id=file_id, welcome=welcome)
                writing.append(asyncio.create_task(self._write(ready, result, file_id)))
                chunks.append(result)
                while len(writing) >= IN_FLIGHT:
                    await writing.popleft()
            while writing:
                await writing.popleft()
        finally:
            for task in writing:
                task.cancel()
        rejected = sorted((r for c in chunks for r in c.rejected), key=lambda r: r.row)
        return ImportReport(
            file=file_id,
            rows=rows,
            created=sum(len(c.created) for c in chunks),
            existing=sum(c.existing for c in chunks),
            rejected=len(rejected),
            welcome=welcome,
            chunks=[c.report() for c in chunks],
            rejected_rows=rejected,
        )

    async def _prepare(
        self,
        chunk: list[Row],
        seen: dict[tuple[str, str], int],
        result: ChunkResult,
        *,
        file_id: str,
        welcome: bool,
    ) -> list[importer.Candidate]:
        now = self.clock()
        ready: list[importer.Candidate] = []
        for n, (row, raw) in enumerate(chunk):
            if n % YIELD_EVERY == 0:
                # Validation is CPU work: give the writes in flight (and other requests) a turn.
                await asyncio.sleep(0)
            try:
                if isinstance(raw, importer.RowRejected):
                    raise raw
                made = importer.candidate(
                    row,
                    raw,
                    phone_region=self.phone_region,
                    file_id=file_id,
                    welcome=welcome,
                    now=now,
                    may_grant=self.may_grant,
                )
                for kind, value in made.contacts:
                    if (kind, value) in seen:
                        raise importer.RowRejected(
                            "duplicate_row", f"same {kind} as row {seen[(kind, value)]}"
                        )
            except importer.RowRejected as exc:
                result.rejected.append(RejectedRow(row=row, code=exc.code, message=exc.message))
                continue
            for key in made.contacts:
                seen[key] = row
            ready.append(made)
        return ready

    async def _write(
        self, ready: list[importer.Candidate], result: ChunkResult, file_id: str
    ) -> None:
        # Entries first: a crash before the members leaves entries that listings skip.
        self.uow.members.add_entries([e for c in ready for e in c.entries])
        pending = ready
        not_created: list[importer.Candidate] = []
        for _round in range(CODE_ROUNDS):
            written = self.uow.members.insert_many([(c.member, c.events) for c in pending])
            # Which rows were refused decides what follows; the commit waits until their
            # events are published (it paces the import: one chunk's events at a time).
            await self.uow.commit(written, wait=True)
            refused = written.refused
            refused_set = set(refused)
            result.created += [
                c.member["_id"] for i, c in enumerate(pending) if i not in refused_set
            ]
            retry: list[importer.Candidate] = []
            verdicts = await asyncio.gather(
                *(self._why_refused(pending[i], file_id) for i in refused)
            )
            for i, verdict in zip(refused, verdicts, strict=True):
                c = pending[i]
                if verdict is None:  # no one has its contacts: the referral code collided
                    c.member["referral_code"] = domain.new_referral_code()
                    retry.append(c)
                    continue
                not_created.append(c)
                if isinstance(verdict, RejectedRow):
                    result.rejected.append(verdict)
                else:
                    result.existing += 1
            pending = retry
            if not pending:
                break
        for c in pending:  # still colliding after every round: let the client retry them
            not_created.append(c)
            result.rejected.append(
                RejectedRow(row=c.row, code="unavailable", message="no referral code found; retry")
            )
        self.uow.members.remove_entries(e["_id"] for c in not_created for e in c.entries)
        await self.uow.commit()

    async def _why_refused(self, c: importer.Candidate, file_id: str) -> RejectedRow | bool | None:
        """True: the person is already a member; a RejectedRow: an earlier row of the same
        file created them; None: nobody has these contacts (the referral code collided)."""
        holders = await asyncio.gather(
            *(self.store.holder_of(k, v, {"_id": 1, "imported": 1}) for k, v in c.contacts)
        )
        for (kind, _value), holder in zip(c.contacts, holders, strict=True):
            if holder is None:
                continue
            origin = holder.get("imported") or {}
            if origin.get("file") == file_id and origin.get("row") != c.row:
                return RejectedRow(
                    row=c.row, code="duplicate_row", message=f"same {kind} as row {origin['row']}"
                )
            return True
        return None


def _chunked(items: Iterable[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
