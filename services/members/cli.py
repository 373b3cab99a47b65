"""`sarafan members import FILE`: send a volunteer base to POST /v1/members/import in parts.

The file is split into requests of `--chunk` rows (each well inside the endpoint's bounds),
all sent with the file's identity (its SHA-256) and the number of their first row, so the
service numbers rows as the file does and tells a person repeated later in the file from a
row imported again. Importing is idempotent, so a part that failed in transit is simply sent
again, and the whole file can be imported again after fixing the rejected rows.

Exit status: 0 nothing rejected, 1 some rows rejected, 2 a usage, file or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import io
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from shared.settings import OpsConfig

DEFAULT_CHUNK = 5000
MAX_CHUNK = 50_000
#: Keep each request well under the endpoint's 20 MB.
MAX_PART_BYTES = 16 * 1024 * 1024
#: Tries per part when the service is unreachable or answers 503.
ATTEMPTS = 3
CSV_TYPE = "text/csv"
JSONL_TYPE = "application/x-ndjson"


class UsageError(Exception):
    pass


@dataclass
class Part:
    """One request: its body, the file's number of its first row, and its rows' originals."""

    first_row: int
    body: bytes
    rows: dict[int, list[str]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.rows)


@dataclass
class Totals:
    rows: int = 0
    created: int = 0
    existing: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


def _kind(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return CSV_TYPE
    if suffix in (".jsonl", ".ndjson", ".json"):
        return JSONL_TYPE
    return JSONL_TYPE if data.lstrip()[:1] == b"{" else CSV_TYPE


def _delimiter(header: str) -> str:
    # The same choice the service makes from the header row.
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    return max(counts, key=lambda d: (counts[d], d == ","))


def _records(text: str) -> tuple[str, list[str], Iterator[list[str]]]:
    delimiter = _delimiter(text.split("\n", 1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, [])
    if not header:
        raise UsageError("the CSV file is empty (it needs a header row)")
    # Empty rows are not rows, for the service either.
    return delimiter, header, (r for r in reader if any(cell.strip() for cell in r))


def csv_count(text: str) -> int:
    return sum(1 for _ in _records(text)[2])


def csv_parts(text: str, chunk: int) -> tuple[list[str], Iterator[Part]]:
    """The header, and parts of `chunk` data rows each, every part with the header row:
    rows are numbered from 1, the first after the header."""
    delimiter, header, records = _records(text)

    def body(rows: dict[int, list[str]]) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows.values())
        return buffer.getvalue().encode()

    def parts() -> Iterator[Part]:
        rows: dict[int, list[str]] = {}
        size = 0
        for number, record in enumerate(records, start=1):
            rows[number] = record
            size += sum(len(cell) + 3 for cell in record)
            if len(rows) >= chunk or size >= MAX_PART_BYTES:
                yield Part(next(iter(rows)), body(rows), rows)
                rows, size = {}, 0
        if rows:
            yield Part(next(iter(rows)), body(rows), rows)

    return header, parts()


def jsonl_parts(text: str, chunk: int) -> Iterator[Part]:
    """Parts of `chunk` lines each; rows are line numbers (empty lines count but are skipped
    by the service too)."""
    lines = text.splitlines()
    start = 0
    while start < len(lines):
        end = min(start + chunk, len(lines))
        size = 0
        for i in range(start, end):  # keep the part inside the byte bound
            size += len(lines[i]) + 1
            if size > MAX_PART_BYTES and i > start:
                end = i
                break
        part = Part(start + 1, ("\n".join(lines[start:end]) + "\n").encode())
        part.rows = {i + 1: [lines[i]] for i in range(start, end) if lines[i].strip()}
        yield part
        start = end


class Progress:
    """`[#####.....]  12,000/100,000 rows  1,840 rows/s` on stderr, redrawn in place on a
    terminal, one line per part otherwise."""

    WIDTH = 30

    def __init__(self, total: int, err: TextIO) -> None:
        self.total = max(total, 1)
        self.err = err
        self.started = time.monotonic()
        self.live = err.isatty()

    def show(self, done: int) -> None:
        filled = round(self.WIDTH * done / self.total)
        rate = done / max(time.monotonic() - self.started, 1e-6)
        line = (
            f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done:,}/{self.total:,} rows"
            f"  {rate:,.0f} rows/s"
        )
        self.err.write(("\r" + line) if self.live else line + "\n")
        self.err.flush()

    def end(self) -> None:
        if self.live:
            self.err.write("\n")
            self.err.flush()


async def _send(client: httpx.AsyncClient, part: Part, params: dict[str, Any], kind: str) -> dict:
    delay = 0.5
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = await client.post(
                "/v1/members/import",
                content=part.body,
                params={**params, "first_row": part.first_row},
                headers={"Content-Type": kind},
            )
        except httpx.TransportError as exc:
            if attempt == ATTEMPTS:
                raise UsageError(f"cannot reach the members service: {exc}") from exc
        else:
            if response.status_code == 200:
                return response.json()
            if response.status_code != 503 or attempt == ATTEMPTS:
                try:
                    error = response.json()["error"]
                    text = f"{error['code']}: {error['message']}"
                except (ValueError, KeyError, TypeError):
                    text = response.text[:500]
                raise UsageError(f"rows from {part.first_row}: HTTP {response.status_code} {text}")
        await asyncio.sleep(delay)  # the import is idempotent: sending a part again is safe
        delay *= 2
    raise AssertionError("unreachable")


def _write_rejected(
    path: Path, kind: str, header: list[str], rejected: list[dict[str, Any]]
) -> Path:
    """The rejected rows with why, and their original values, to fix and import again."""
    target = path.with_name(path.name + ".rejected.csv")
    with target.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["row", "code", "message", *(header if kind == CSV_TYPE else ["line"])])
        for r in rejected:
            writer.writerow([r["row"], r["code"], r["message"], *r.get("original", [])])
    return target


def members_url(environ: Mapping[str, str]) -> str:
    """The members service's base URL an operator's shell points at (next to `sarafan up`,
    its port)."""
    port = environ.get("SARAFAN_MEMBERS_PORT") or "8001"
    return environ.get("SARAFAN_MEMBERS_URL") or f"http://127.0.0.1:{port}"


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarafan members import",
        description="Import an existing volunteer base (CSV with a header row, or JSON lines) "
        "into the members service. Importing again is safe: existing members are not doubled.",
    )
    parser.add_argument("file", type=Path, help="the CSV (.csv) or JSON lines (.jsonl) file")
    parser.add_argument(
        "--url",
        default=members_url(environ),
        help="members service base URL (SARAFAN_MEMBERS_URL)",
    )
    parser.add_argument(
        "--welcome", action="store_true", help="welcome the imported members (default: no)"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=DEFAULT_CHUNK,
        help=f"rows per request, 1-{MAX_CHUNK} (default {DEFAULT_CHUNK})",
    )
    return parser


async def import_file(
    argv: list[str],
    environ: Mapping[str, str] = os.environ,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """The command itself (async, so a test can run it against the app in-process)."""
    try:
        args = _parser(environ).parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage
        return 0 if exc.code == 0 else 2
    try:
        if not 1 <= args.chunk <= MAX_CHUNK:
            raise UsageError(f"--chunk must be between 1 and {MAX_CHUNK}")
        token = OpsConfig.from_env(environ).api_token
        if not token:
            raise UsageError("no API token (set SARAFAN_API_TOKEN or run `sarafan up` first)")
        try:
            data = args.file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc}") from exc
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{args.file} is not UTF-8 text: {exc}") from exc
        kind = _kind(args.file, data)
        header: list[str] = []
        if kind == CSV_TYPE:
            header, parts = csv_parts(text, args.chunk)
            total = csv_count(text)
        else:
            parts = jsonl_parts(text, args.chunk)
            total = sum(1 for line in text.splitlines() if line.strip())
        totals = await _run(args, kind, parts, total, data, token, err, transport)
    except UsageError as exc:
        print(f"sarafan members import: {exc}", file=err)
        return 2
    took = time.monotonic() - totals.started
    summary = (
        f"{args.file}: {totals.rows:,} rows: {totals.created:,} created, "
        f"{totals.existing:,} existing, {len(totals.rejected):,} rejected "
        f"in {took:.1f} s ({totals.rows / max(took, 1e-6):,.0f} rows/s)"
    )
    print(summary, file=out)
    if not totals.rejected:
        return 0
    target = _write_rejected(args.file, kind, header, totals.rejected)
    for r in totals.rejected[:10]:
        print(f"  row {r['row']}: {r['code']}: {r['message']}", file=out)
    if len(totals.rejected) > 10:
        print(f"  … and {len(totals.rejected) - 10:,} more", file=out)
    print(f"rejected rows with the reasons: {target}", file=out)
    return 1


async def _run(
    args: argparse.Namespace,
    kind: str,
    parts: Iterator[Part],
    total: int,
    data: bytes,
    token: str,
    err: TextIO,
    transport: httpx.AsyncBaseTransport | None,
) -> Totals:
    params: dict[str, Any] = {
        "file": hashlib.sha256(data).hexdigest()[:32],
        "welcome": "true" if args.welcome else "false",
    }
    totals = Totals()
    progress = Progress(total, err)
    async with httpx.AsyncClient(
        base_url=args.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(600, connect=5),
        transport=transport,
    ) as client:
        try:
            for part in parts:
                report = await _send(client, part, params, kind)
                totals.rows += part.count
                totals.created += report["created"]
                totals.existing += report["existing"]
                for row in report["rejected_rows"]:
                    totals.rejected.append({**row, "original": part.rows.get(row["row"], [])})
                progress.show(totals.rows)
        finally:
            progress.end()
    return totals


def import_main(
    argv: list[str],
    environ: Mapping[str, str] = os.environ,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    try:
        return asyncio.run(import_file(argv, environ, out, err))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(import_main(sys.argv[1:]))
