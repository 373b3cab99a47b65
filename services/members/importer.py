"""Bulk import of an existing volunteer base: CSV or JSON lines, validated row by row.

Each row goes through the join's own model and rules (`ImportRow` extends `JoinRequest`,
contacts are normalised by the same functions), so a row is refused exactly when a join with
the same data would be, with the same code and message.

Rows are written a chunk at a time: the chunk's listing entries, then its members (each with
its member-joined in its outbox) in one unordered `insert_many`; the duplicate-key errors say
which rows were refused by a unique index. Each of those is looked up by its contacts: a
member who has one of them means the row already exists (or, when that member came from an
earlier row of the same file, that the row repeats it); no holder means the referral code
collided, and only those rows are written again with a new code. Then the relay publishes the
chunk's events at once (`flush_many`); its sweeper covers a crash in between.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import re
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.members import domain
from services.members.schemas import (
    ChunkReport,
    ImportReport,
    ImportRow,
    RejectedRow,
    granted_roles,
)
from services.members.store import MemberStore
from shared.events import CloudEvent, new_event, utcnow
from shared.http import ERROR_DETAILS_MAX, ERROR_TEXT_MAX
from shared.outbox import Relay, with_outbox

Doc = dict[str, Any]

#: Bounds of one request (the CLI splits a bigger file into several requests).
MAX_ROWS = 50_000
MAX_BYTES = 20 * 1024 * 1024
#: Rows validated and written together.
CHUNK_ROWS = 1000
#: Chunks being written at once (one written while the next is validated).
IN_FLIGHT = 2
#: Rows validated between two turns of the event loop.
YIELD_EVERY = 50
#: Rounds of new referral codes for rows whose code collided (23^7 codes: one is plenty).
CODE_ROUNDS = 5

CSV = "csv"
JSONL = "jsonl"
MEDIA_TYPES = {
    "text/csv": CSV,
    "application/csv": CSV,
    "application/x-ndjson": JSONL,
    "application/jsonl": JSONL,
    "application/x-jsonlines": JSONL,
}

#: The columns (CSV) or fields (JSON lines) of a row.
FIELDS = (
    "display_name",
    "email",
    "phone",
    "telegram",
    "region",
    "roles",
    "interests",
    "skills",
    "locale",
    "timezone",
    "joined_at",
    "consent_terms",
    "consent_marketing",
    "consent_at",
    "consent_source",
)
REQUIRED_COLUMNS = ("display_name", "region", "joined_at", "consent_terms")
LIST_FIELDS = ("roles", "interests", "skills")
#: Several values in one CSV cell: `volunteer;coordinator` or `volunteer|coordinator`.
LIST_SEPARATORS = re.compile(r"[;|]")
FILE_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class ImportRefused(ValueError):
    """The request as a whole cannot be imported (HTTP 4xx, nothing written)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RowRejected(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# -- reading the body ------------------------------------------------------------------------


def media_kind(content_type: str | None) -> str:
    kind = MEDIA_TYPES.get((content_type or "").split(";")[0].strip().lower())
    if kind is None:
        raise ImportRefused(
            415,
            "unsupported_media_type",
            "send text/csv (a header row, then one member per row) or application/x-ndjson "
            "(one JSON object per line)",
        )
    return kind


def decode(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRefused(422, "invalid_import", f"the file is not UTF-8 text: {exc}") from exc


def lines(text: str) -> Iterator[str]:
    """The lines of a text one at a time, line ends kept (no copy of the whole text)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _delimiter(header: str) -> str:
    # Spreadsheets in many locales (Russian among them) save CSV with `;` between cells.
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    return max(counts, key=lambda d: (counts[d], d == ","))


def csv_rows(text: str, first_row: int) -> Iterator[tuple[int, Doc | RowRejected]]:
    """(row number, fields) for each data row; the header row names the columns."""
    header_line = next(lines(text), "")
    delimiter = _delimiter(header_line)
    reader = csv.reader(lines(text), delimiter=delimiter)
    header = [name.strip().lower() for name in next(reader, [])]
    check_header(header)
    number = first_row - 1
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue  # an empty line between rows is not a row
        number += 1
        if len(record) > len(header):
            yield (
                number,
                RowRejected("invalid_request", f"{len(record)} values for {len(header)} columns"),
            )
            continue
        yield number, dict(zip(header, record, strict=False))


def check_header(header: list[str]) -> None:
    if not header or header == [""]:
        raise ImportRefused(422, "invalid_import", "the CSV file has no header row")
    unknown = [name for name in header if name not in FIELDS]
    if unknown:
        raise ImportRefused(
            422,
            "invalid_import",
            f"unknown column(s) {', '.join(map(repr, unknown))}; the columns are "
            + ", ".join(FIELDS),
        )
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise ImportRefused(422, "invalid_import", f"column(s) named twice: {', '.join(twice)}")
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if not {"email", "phone", "telegram"} & set(header):
        missing.append("email, phone or telegram")
    if missing:
        raise ImportRefused(422, "invalid_import", f"missing column(s): {', '.join(missing)}")


def jsonl_rows(text: str, first_row: int) -> Iterator[tuple[int, Doc | RowRejected]]:
    """(line number, fields) for each non-empty line."""
    for number, line in enumerate(lines(text), start=first_row):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            yield number, RowRejected("invalid_request", f"the line is not JSON: {exc}")
            continue
        except RecursionError:
            # Nesting deeper than the parser goes: no row of ours looks like that.
            yield number, RowRejected("invalid_request", "the line is not JSON: nested too deep")
            continue
        if not isinstance(value, dict):
            yield number, RowRejected("invalid_request", "the line is not a JSON object")
            continue
        unknown = sorted(set(value) - set(FIELDS))
        if unknown:
            yield number, RowRejected("invalid_request", f"unknown field(s): {', '.join(unknown)}")
            continue
        yield number, value


def count_rows(text: str, kind: str) -> int:
    """How many rows the body holds (checked against MAX_ROWS before anything is written).

    It reads the whole CSV file, so a file the csv module cannot read (a cell over its
    field limit, an unterminated quote at the end) is refused here, before any row."""
    if kind == JSONL:
        return sum(1 for line in lines(text) if line.strip())
    reader = csv.reader(lines(text), delimiter=_delimiter(next(lines(text), "")))
    try:
        return max(sum(1 for record in reader if any(c.strip() for c in record)) - 1, 0)
    except csv.Error as exc:
        raise ImportRefused(
            422, "invalid_import", f"the CSV file cannot be read at line {reader.line_num}: {exc}"
        ) from exc


def rows_of(text: str, kind: str, first_row: int) -> Iterator[tuple[int, Doc | RowRejected]]:
    return csv_rows(text, first_row) if kind == CSV else jsonl_rows(text, first_row)


# -- one row ---------------------------------------------------------------------------------


def join_fields(raw: Mapping[str, Any]) -> Doc:
    """A row's flat fields in the shape of a join body (`consent: {terms, marketing}`).

    An empty CSV cell is a value not given, as a field left out of a join is.
    """
    given = {k: v for k, v in raw.items() if v is not None and v != ""}
    fields: Doc = {k: v for k, v in given.items() if not k.startswith("consent_")}
    for name in LIST_FIELDS:
        if isinstance(given.get(name), str):
            fields[name] = [p for p in LIST_SEPARATORS.split(given[name]) if p.strip()]
    consent: Doc = {}
    if "consent_terms" in given:
        consent["terms"] = given["consent_terms"]
    if "consent_marketing" in given:
        consent["marketing"] = given["consent_marketing"]
    fields["consent"] = consent
    for name in ("consent_at", "consent_source"):
        if name in given:
            fields[name] = given[name]
    return fields


def _field_name(location: tuple[Any, ...]) -> str:
    """A model error's place, named as the import's column."""
    names = [str(part) for part in location if not isinstance(part, int)]
    if names[:1] == ["consent"]:
        return f"consent_{names[1]}" if len(names) > 1 else "consent_terms"
    return ".".join(names)


def validation_message(exc: ValidationError) -> str:
    # The same text a join's 422 gives (shared/http.py), with the import's column names, and
    # as bounded (a row of 50 bad interests names the first few, not all 50).
    return "; ".join(
        f"{_field_name(e['loc']) or 'row'}: {_short(str(e['msg']))}"
        for e in exc.errors()[:ERROR_DETAILS_MAX]
    )


def _short(text: str) -> str:
    return text if len(text) <= ERROR_TEXT_MAX else text[: ERROR_TEXT_MAX - 1] + "…"


@dataclass
class Candidate:
    """A valid row, ready to write."""

    row: int
    member: Doc
    entries: list[Doc]
    contacts: list[tuple[str, str]]


def candidate(
    row: int,
    raw: Doc,
    *,
    phone_region: str | None,
    file_id: str,
    welcome: bool,
    now: datetime,
    may_grant: bool = False,
) -> Candidate:
    """Validate one row as a join would be and build its member document and event.

    Like a join, a row giving the coordinator or staff role needs a key with `admin`
    (`may_grant`); without it the row is rejected with the join's code, `forbidden`."""
    try:
        body = ImportRow.model_validate(join_fields(raw))
    except ValidationError as exc:
        raise RowRejected("invalid_request", validation_message(exc)) from exc
    if not may_grant and (granted := granted_roles(body.roles)):
        raise RowRejected(
            "forbidden",
            f"giving the {' and '.join(granted)} role needs an API key with the scope admin",
        )
    try:
        contacts = domain.normalise_contacts(body.email, body.phone, body.telegram, phone_region)
    except domain.RuleViolation as exc:
        raise RowRejected(exc.code, exc.message) from exc
    member = domain.new_member(
        str(uuid.uuid4()),
        body.model_dump(include=set(domain.PROFILE_FIELDS)),
        contacts,
        domain.consent_at_join(
            body.consent.marketing, body.consent_at or body.joined_at, body.consent_source
        ),
        body.joined_at,
    )
    member["referral_code"] = domain.new_referral_code()
    # Which file and row created the member: a later row of the same file with the same
    # person is then told apart from the same row imported again.
    member["imported"] = {"file": file_id, "row": row}
    event = new_event(domain.member_joined(member, imported=True, welcome=welcome), time=now)
    return Candidate(
        row=row,
        member=with_outbox(member, [event]),
        entries=list(domain.tag_entries(member).values()),
        contacts=[(k, v) for k, v in contacts.as_dict().items() if v],
    )


# -- the whole request -----------------------------------------------------------------------


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


def file_identity(body: bytes) -> str:
    """A file's identity when the client names none: its content."""
    return hashlib.sha256(body).hexdigest()[:32]


class Importer:
    def __init__(
        self,
        store: MemberStore,
        relay: Relay,
        phone_region: str | None,
        *,
        may_grant: bool = False,
    ) -> None:
        self.store = store
        self.relay = relay
        self.phone_region = phone_region
        #: Whether the caller's key may give the coordinator and staff roles (`admin`).
        self.may_grant = may_grant

    async def run(
        self, text: str, kind: str, *, file_id: str, welcome: bool, first_row: int = 1
    ) -> ImportReport:
        rows = count_rows(text, kind)
        if rows > MAX_ROWS:
            raise ImportRefused(
                413,
                "too_many_rows",
                f"{rows} rows; at most {MAX_ROWS} per request (the CLI splits a file)",
            )
        # Within the request, the first row with a contact keeps it; later rows are rejected.
        seen: dict[tuple[str, str], int] = {}
        chunks: list[ChunkResult] = []
        # A pipeline: while the database writes one chunk, this process validates the next
        # (the two run on different cores). Contacts are checked against `seen` in row order
        # during validation, so the order in which chunks are written does not matter.
        writing: deque[asyncio.Task[None]] = deque()
        try:
            for chunk in _chunked(rows_of(text, kind, first_row), CHUNK_ROWS):
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
        chunk: list[tuple[int, Doc | RowRejected]],
        seen: dict[tuple[str, str], int],
        result: ChunkResult,
        *,
        file_id: str,
        welcome: bool,
    ) -> list[Candidate]:
        now = utcnow()
        ready: list[Candidate] = []
        for n, (row, raw) in enumerate(chunk):
            if n % YIELD_EVERY == 0:
                # Validation is CPU work: give the writes in flight (and other requests) a turn.
                await asyncio.sleep(0)
            try:
                if isinstance(raw, RowRejected):
                    raise raw
                made = candidate(
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
                        raise RowRejected(
                            "duplicate_row", f"same {kind} as row {seen[(kind, value)]}"
                        )
            except RowRejected as exc:
                result.rejected.append(RejectedRow(row=row, code=exc.code, message=exc.message))
                continue
            for key in made.contacts:
                seen[key] = row
            ready.append(made)
        return ready

    async def _write(self, ready: list[Candidate], result: ChunkResult, file_id: str) -> None:
        # Entries first: a crash before the members leaves entries that listings skip.
        await self.store.add_entries([e for c in ready for e in c.entries])
        pending = ready
        not_created: list[Candidate] = []
        for _round in range(CODE_ROUNDS):
            refused = await self.store.insert_many([c.member for c in pending])
            refused_set = set(refused)
            result.created += [
                c.member["_id"] for i, c in enumerate(pending) if i not in refused_set
            ]
            retry: list[Candidate] = []
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
        await self.store.remove_entries(e["_id"] for c in not_created for e in c.entries)
        if result.created and not self.relay.paused:
            # The events just written go out without reading them back.
            created = set(result.created)
            written = {
                c.member["_id"]: [CloudEvent.model_validate(e) for e in c.member["outbox"].values()]
                for c in ready
                if c.member["_id"] in created
            }
            await self.relay.flush_many(self.store.members, list(written), written)

    async def _why_refused(self, c: Candidate, file_id: str) -> RejectedRow | bool | None:
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


def _chunked(
    items: Iterable[tuple[int, Doc | RowRejected]], size: int
) -> Iterator[list[tuple[int, Doc | RowRejected]]]:
    chunk: list[tuple[int, Doc | RowRejected]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
