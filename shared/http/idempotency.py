"""Idempotency-Key on POST /v1: a repeat gets the first answer, and ids derived from the key.

A record belongs to the API key that made it: its id is the key's id, the path and the
Idempotency-Key (`record_id`, the one place that builds it), so the same Idempotency-Key sent
with another API key is another request. The kernel checks the route's scope before it claims
or replays a record.

Each request with a key claims a record (`started`); when it is done the record keeps its
status and body (`done`), which a repeat with the same key and body replays. Only an answer
that did the work (2xx) is kept: after any 4xx or 5xx nothing was done, the record goes and a
retry runs for real. A record left `started` by a process that died is taken over after a
lease, so a client can always retry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import uuid
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DocumentTooLarge
from starlette.middleware.base import RequestResponseEndpoint

from shared.events import utcnow
from shared.http.errors import error_body
from shared.retry import Backoff, retry
from shared.store import TRANSIENT_DB_ERRORS, epoch_ms, expiring_index, is_duplicate_key

log = logging.getLogger("sarafan.http")

IDEMPOTENCY_TTL = timedelta(hours=48)  # docs/contract.md: kept at least 24 hours
#: A request that started this long ago without finishing died with its process.
IDEMPOTENCY_LEASE_MS = 30_000
#: How long a done request waits for MongoDB to keep its answer (it answers anyway after).
REMEMBER_FOR_SECONDS = 20.0
#: An Idempotency-Key is a client's token, not a payload: printable ASCII, bounded.
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
#: Fields of a request or response body that name the member a request concerns: its
#: Idempotency-Key record is indexed by the first one found, so erasure can delete it.
MEMBER_KEYS = ("member_id", "author_id", "by")

Records = AsyncCollection[dict[str, Any]]


def concerned_member(*bodies: bytes) -> str | None:
    """The member a request concerns, from its body or its response's (see MEMBER_KEYS)."""
    for body in bodies:
        try:
            value = json.loads(body) if body else None
        except ValueError:
            continue
        if isinstance(value, dict):
            for key in MEMBER_KEYS:
                found = value.get(key)
                if isinstance(found, str) and found:
                    return found
    return None


#: Namespace of ids derived from an Idempotency-Key (see `new_id`).
_KEYED = uuid.UUID("2f5d3c1e-8a47-4f0b-9c3e-5a1d7e6b4c20")


def record_id(key_id: str, path: str, idempotency_key: str) -> str:
    """The id of the Idempotency-Key record of a request: the API key's id, the path and the
    Idempotency-Key. Neither a key id nor an Idempotency-Key holds a space, so the three never
    run into one another."""
    return f"{key_id} {path} {idempotency_key}"


def request_record(request: Request) -> str | None:
    """The id of this request's Idempotency-Key record, or None when it has no key (a use
    case that must find the record, or the member it made, by it: a join, a decision)."""
    key = request.headers.get("Idempotency-Key")
    if not key:
        return None
    return record_id(request.state.principal.key_id, request.url.path, key)


def new_id(request: Request) -> str:
    """The id of what this request creates: derived from its Idempotency-Key record when it
    has one (so from the API key too: another key's request never lands on it).

    A write can succeed while its answer is lost (the connection drops after the server
    committed it); the client retries with the same key, the kernel runs the request again
    (nothing was recorded as done), and the retry must find the first one's document, not
    create a second: with the same id its insert meets a duplicate key.
    """
    record = request_record(request)
    if record is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_KEYED, record))


def requests_of(member_id: str) -> dict[str, Any]:
    """A filter: the Idempotency-Key records of requests about the member (served by the
    records' `member_id` index). Erasure deletes them: they keep the response, which may name
    the member or quote what they wrote."""
    return {"member_id": {"$eq": member_id}}


async def forget_requests_of(coll: Records, member_id: str) -> None:
    """Erasure outside a unit of work: the records of requests about the member go."""
    await coll.delete_many(requests_of(member_id))


async def ensure_idempotency_indexes(coll: Records) -> None:
    seconds = int(IDEMPOTENCY_TTL.total_seconds())
    await expiring_index(coll, "created_at", seconds, kept_by_job=True)
    await coll.create_index("member_id", sparse=True)
    await coll.create_index("created_ms")


def kept(status: int) -> bool:
    """Whether an answer is kept for replay: only one that did the work (2xx).

    Every 4xx and 5xx leaves nothing done. Those about the caller (401, 403: the key or its
    binding; 422: what was sent; 429: how often) must never be replayed to a retry that fixed
    them; those about the moment (404 for what another service has not learned yet, 409, 412)
    would be stale by the retry. Not keeping them costs the retry a run, never a second effect.
    """
    return 200 <= status < 300


def invalid_key() -> JSONResponse:
    return JSONResponse(
        error_body(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 200 printable ASCII characters",
        ),
        status_code=422,
    )


def _conflict(message: str) -> JSONResponse:
    return JSONResponse(
        error_body("conflict", message), status_code=409, headers={"Retry-After": "1"}
    )


def _done(response: Response, body: bytes, request_body: bytes) -> dict[str, Any]:
    """The record of a done request: its answer `body`, to replay (see `Idempotency.run`)."""
    done: dict[str, Any] = {
        "state": "done",
        "status": response.status_code,
        "body": body.decode("utf-8", "replace"),
        "media_type": response.media_type or "application/json",
    }
    if "no-store" in response.headers.get("Cache-Control", ""):
        # A secret shown once (a new API key's token): the record says the request was
        # done, so a repeat does nothing twice, but the answer is kept nowhere.
        done.update(body="", shown_once=True)
    member = concerned_member(request_body, body)
    if member is not None:
        done["member_id"] = member
    return done


def _answer_for(record: dict[str, Any] | None, fingerprint: str) -> Response | None:
    """What a repeat gets from the record it found; None when that one is still started."""
    if record is None:
        return _conflict("request with this Idempotency-Key changed; retry")
    if record["fingerprint"] != fingerprint:
        return JSONResponse(
            error_body(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            ),
            status_code=422,
        )
    if record.get("state") == "done" and record.get("shown_once"):
        return JSONResponse(
            error_body(
                "answer_not_kept",
                "this request was done; its answer held a secret shown once and not kept",
            ),
            status_code=409,
        )
    if record.get("state") == "done":
        return Response(
            record["body"].encode(),
            status_code=int(record["status"]),
            media_type=record.get("media_type", "application/json"),
            headers={"Idempotent-Replayed": "true"},
        )
    return None


class Idempotency:
    """The Idempotency-Key records of one service (its `idempotency_keys` collection)."""

    def __init__(self, records: Records) -> None:
        self.records = records

    async def run(
        self, request: Request, call_next: RequestResponseEndpoint, record_id: str
    ) -> Response:
        """Run the request once for its record, or answer as the first run did."""
        body = await request.body()
        fingerprint = hashlib.sha256(body).hexdigest()
        claimed = await self._claim(record_id, fingerprint)
        if isinstance(claimed, Response):
            return claimed
        try:
            response = await call_next(request)
        except Exception:
            await self.records.delete_one({"_id": record_id})
            raise
        chunks = [chunk async for chunk in response.body_iterator]  # type: ignore[attr-defined]
        content = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
        if not kept(response.status_code):
            # Nothing was done: the retry runs the request again, and answers as things are then.
            await self.records.delete_one({"_id": record_id})
        else:
            await self._remember(record_id, _done(response, content, body))
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(content, status_code=response.status_code, headers=headers)

    async def _remember(self, record_id: str, done: dict[str, Any]) -> None:
        """Keep the answer for replays. The work is done whatever happens here, so the client
        gets its answer even if this fails: an error now would make it retry, and a retry
        that takes the key over after its lease would do the work a second time. MongoDB
        away for a moment (a restart) is waited out."""
        try:
            await retry(
                lambda: self._keep(record_id, done),
                what=f"keeping the answer of {record_id}",
                backoff=Backoff(0.1, 1.0),
                on=TRANSIENT_DB_ERRORS,
                within=REMEMBER_FOR_SECONDS,
                level=logging.DEBUG,
            )
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("could not keep the answer of %s: %r", record_id, exc)

    async def _keep(self, record_id: str, done: dict[str, Any]) -> None:
        try:
            await self.records.update_one({"_id": record_id}, {"$set": done})
        except DocumentTooLarge:
            # Too big to keep: a retry runs again rather than finding it in progress.
            with contextlib.suppress(Exception):
                await self.records.delete_one({"_id": record_id})

    async def _claim(self, record_id: str, fingerprint: str) -> Response | None:
        """None when this request may run; otherwise the answer to give (replay, 409, 422)."""
        now_ms = epoch_ms(utcnow())
        try:
            await self.records.insert_one(
                {
                    "_id": record_id,
                    "fingerprint": fingerprint,
                    "state": "started",
                    "created_at": utcnow(),
                    "started_ms": now_ms,
                    "created_ms": now_ms,
                }
            )
            return None
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise
        record = await self.records.find_one({"_id": record_id})
        answer = _answer_for(record, fingerprint)
        if answer is not None or record is None:
            return answer
        # Started but never finished: a process that died mid-request (or lost its database)
        # leaves this behind. After the lease the retry takes the key over and runs again, so
        # a client can always retry; the request's own rules (a unique email, say) still hold.
        started = int(record.get("started_ms") or 0)
        if now_ms - started > IDEMPOTENCY_LEASE_MS:
            taken = await self.records.find_one_and_update(
                {"_id": record_id, "state": "started", "started_ms": record.get("started_ms")},
                {"$set": {"started_ms": now_ms}},
            )
            if taken is not None:
                return None
        return _conflict("a request with this Idempotency-Key is still in progress")
