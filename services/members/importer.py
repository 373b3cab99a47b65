"""Reading an import: a CSV or JSON-lines body, row by row, each validated as a join is.

Each row goes through the join's own model and rules (`ImportRow` extends `JoinRequest`,
contacts are normalised by the same functions), so a row is refused exactly when a join with
the same data would be, with the same code and message. Writing the rows is import_run.py's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.members import domain, listing
from services.members.contacts import normalise_contacts
from services.members.schemas import ImportRow
from services.members.violations import RuleViolation
from shared.documents import Doc
from shared.events import CloudEvent, new_event
from shared.http import ERROR_DETAILS_MAX, ERROR_TEXT_MAX
from shared.outbox_layout import carrying

#: Bounds of one request (the CLI splits a bigger file into several requests).
MAX_ROWS = 50_000
MAX_BYTES = 20 * 1024 * 1024

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
    # The same text a join's 422 gives (shared/http/errors.py), with the import's column names, and
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
    events: list[CloudEvent]
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
    if not may_grant and (granted := domain.granted_roles(body.roles)):
        raise RowRejected(
            "forbidden",
            f"giving the {' and '.join(granted)} role needs an API key with the scope admin",
        )
    try:
        contacts = normalise_contacts(body.email, body.phone, body.telegram, phone_region)
    except RuleViolation as exc:
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
        # The document as its write stores it (its event included), and the event for that
        # write to publish.
        member=carrying(member, [event]),
        events=[event],
        entries=list(listing.tag_entries(member).values()),
        contacts=[(k, v) for k, v in contacts.as_dict().items() if v],
    )


def file_identity(body: bytes) -> str:
    """A file's identity when the client names none: its content."""
    return hashlib.sha256(body).hexdigest()[:32]
