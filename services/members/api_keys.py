"""The admin endpoint for API keys: create (the token shown once), list, revoke.

Keys are kept, hashed, in the NATS key-value bucket every service watches (shared/keys.py):
this service only writes the bucket, and a revocation reaches the other three as soon as their
watch delivers it, without any service reading another's database. Every route needs `admin`.

A key may be bound to a member (`member_id`, a member of this service when the key is made):
it then acts as that member only. A key may say its own write rate (`rate_per_minute`); one
that does not has the services' default (SARAFAN_KEY_RATE_PER_MINUTE).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

import nats.errors
from fastapi import APIRouter, Path, Request, Response
from pydantic import AfterValidator, BaseModel, Field

from services.members.context import Members, MembersDep
from shared import keys
from shared.clock import utcnow
from shared.http import ApiError, principal_of, require
from shared.keys import ADMIN, BOOTSTRAP_ID, KEY_ID_RE, SCOPES, KeyRecord
from shared.limits import Ident, Moment, Name
from shared.limits import Request as Body

log = logging.getLogger("sarafan.members.keys")

router = APIRouter(prefix="/v1", tags=["keys"])

T = TypeVar("T")
#: The highest write rate a key may say (a minute): past it, a key is as good as unlimited.
RATE_MAX = 100_000
#: A key id as shared.keys makes them; the bound keeps an absurd path out of the bucket.
KeyId = Annotated[str, Path(max_length=100, description="the id of the key (in its token)")]


def _known_scope(value: str) -> str:
    if value not in SCOPES:
        raise ValueError(f"unknown scope {value!r}; known: {', '.join(SCOPES)}")
    return value


Scope = Annotated[
    str, Field(json_schema_extra={"enum": list(SCOPES)}), AfterValidator(_known_scope)
]


def _in_the_future(value: datetime | None) -> datetime | None:
    if value is None:
        return value
    # Compared (and kept) as an aware UTC time: a naive one is UTC.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if aware <= utcnow():
        raise ValueError("must be in the future")
    return aware.astimezone(UTC)


class KeyIn(Body):
    name: Name = Field(description="who or what uses it: 'sign-up page', 'crm sync'")
    scopes: list[Scope] = Field(min_length=1, max_length=len(SCOPES))
    expires_at: Annotated[Moment | None, AfterValidator(_in_the_future)] = Field(
        None, description="when it stops working (default: never; revoke it to stop it)"
    )
    member_id: Ident | None = Field(
        None,
        description="bind the key to this member: every write acts as them, and of one "
        "member's own resources it reads theirs only (default: unbound, for any member)",
    )
    rate_per_minute: int | None = Field(
        None,
        ge=1,
        le=RATE_MAX,
        description="writes a minute it may make to each service (default: "
        "SARAFAN_KEY_RATE_PER_MINUTE); beyond it 429 with Retry-After",
    )


class KeyOut(BaseModel):
    """A key as an admin sees it: never its token, never its hash."""

    key_id: str
    name: str
    scopes: list[str]
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    member_id: str | None = Field(None, description="the member it is bound to, or null")
    acts_for: str = Field(description="'member <id>' for a bound key, else 'any member'")
    rate_per_minute: int = Field(description="the writes a minute it may make to each service")
    rate_from: Literal["key", "default"] = Field(
        description="'key': its own rate; 'default': SARAFAN_KEY_RATE_PER_MINUTE"
    )

    @classmethod
    def of(cls, record: KeyRecord, now: datetime, default_rate: int) -> KeyOut:
        status: Literal["active", "expired", "revoked"] = "active"
        if record.revoked_at is not None:
            status = "revoked"
        elif not record.usable(now):
            status = "expired"
        return cls(
            key_id=record.id,
            name=record.name,
            scopes=record.scopes,
            status=status,
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            member_id=record.member_id,
            acts_for=f"member {record.member_id}" if record.member_id else "any member",
            rate_per_minute=record.rate_per_minute or default_rate,
            rate_from="key" if record.rate_per_minute else "default",
        )


class KeyCreated(KeyOut):
    token: str = Field(
        description="the bearer token: shown this once, kept only as a hash, never shown again"
    )


class KeyList(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None = Field(None, description="always null: every key is listed")


async def _on_nats(members: Members, work: Callable[[], Awaitable[T]]) -> T:
    """`work()`'s answer, or 503 while NATS is away (the keys live there, nowhere else)."""
    if not members.bus.connected:
        raise ApiError(503, "unavailable", "NATS is unavailable: keys cannot be managed; retry")
    try:
        return await work()
    except (nats.errors.Error, ConnectionError, TimeoutError, OSError) as exc:
        log.warning("key bucket unavailable: %r", exc)
        raise ApiError(
            503, "unavailable", "NATS is unavailable: keys cannot be managed; retry"
        ) from exc


@router.post("/keys", status_code=201, response_model=KeyCreated, dependencies=[require(ADMIN)])
async def create_key(
    body: KeyIn, request: Request, response: Response, members: MembersDep
) -> KeyCreated:
    """Make an API key with the given scopes; its token is in this answer only.

    With an Idempotency-Key a repeat makes no second key, but the answer holds a secret that
    is kept nowhere (`Cache-Control: no-store`): a repeat answers 409. A key whose answer was
    lost is listed (by its name) and can be revoked; make another.

    A key bound to a member (`member_id`: an active member) cannot also hold `admin`, which
    makes keys and grants roles (422 `bound_admin`)."""
    if body.member_id is not None:
        await _bindable(members, body.member_id, body.scopes)
    token, record = keys.new_key(
        body.name,
        list(body.scopes),
        body.expires_at,
        member_id=body.member_id,
        rate_per_minute=body.rate_per_minute,
    )
    await _keep(request, members, record, "made")
    # Nothing on the way may keep the answer: it holds the token.
    response.headers["Cache-Control"] = "no-store"
    return KeyCreated(**_out(members, record).model_dump(), token=token)


async def _bindable(members: Members, member_id: str, scopes: list[str]) -> None:
    """422 unless a key may be bound to this member with these scopes."""
    if ADMIN in scopes:
        raise ApiError(
            422,
            "bound_admin",
            "a key bound to a member cannot hold the scope admin (it makes keys and grants "
            "roles): bind it without admin, or make an unbound admin key",
        )
    member = await members.store.get(member_id)
    if member is None or member.get("status") != "active":
        raise ApiError(
            422, "unknown_member", f"member {member_id} does not exist or has left: no key binds"
        )


def _out(members: Members, record: KeyRecord) -> KeyOut:
    return KeyOut.of(record, utcnow(), members.default_key_rate)


@router.get("/keys", response_model=KeyList, dependencies=[require(ADMIN)])
async def list_keys(members: MembersDep) -> KeyList:
    """Every key made (revoked ones too, so the audit's key ids stay explained), oldest first.
    The bootstrap key (`SARAFAN_API_TOKEN`) is not one of them: it lives in the environment."""
    records = await _on_nats(members, members.keys.stored)
    return KeyList(items=[_out(members, r) for r in records])


@router.delete("/keys/{key_id}", response_model=KeyOut, dependencies=[require(ADMIN)])
async def revoke_key(key_id: KeyId, request: Request, members: MembersDep) -> KeyOut:
    """Revoke a key: every service refuses it within seconds. The record stays (revoked), so
    the key ids in past events are still explained. Revoking it again changes nothing."""
    if key_id == BOOTSTRAP_ID:
        raise ApiError(
            422,
            "bootstrap_key",
            "the bootstrap key is SARAFAN_API_TOKEN: rotate it by changing the variable",
        )
    found = KEY_ID_RE.fullmatch(key_id) is not None
    record = await _on_nats(members, lambda: members.keys.stored_one(key_id)) if found else None
    if record is None:
        raise ApiError(404, "not_found", f"API key {key_id[:100]} does not exist")
    if record.revoked_at is None:
        record = record.model_copy(update={"revoked_at": utcnow()})
        await _keep(request, members, record, "revoked")
    return _out(members, record)


async def _keep(request: Request, members: Members, record: KeyRecord, what: str) -> None:
    """Write the record to the bucket; this process applies it at once, the other services
    when their watch delivers it. Logged with the key that did it (never the token)."""
    await _on_nats(members, lambda: members.keys.save(record))
    members.keys.apply(record.id, record.model_dump_json().encode())
    log.info(
        "API key %s (%s, scopes %s, acting for %s) %s by key %s",
        record.id,
        record.name,
        ",".join(record.scopes),
        record.member_id or "any member",
        what,
        principal_of(request).key_id,
    )


async def revoke_keys_of(members: Members, member_id: str) -> int:
    """A member who leaves takes their bound keys with them: each is revoked (kept, so past
    events' key ids stay explained). Best effort: with NATS away it is logged and the keys
    stay, and their requests are refused anyway wherever the member must be active."""
    if not members.bus.connected:
        log.warning("NATS unavailable: keys bound to member %s are not revoked", member_id)
        return 0
    try:
        bound = [
            r
            for r in await members.keys.stored()
            if r.member_id == member_id and r.revoked_at is None
        ]
        for record in bound:
            revoked = record.model_copy(update={"revoked_at": utcnow()})
            await members.keys.save(revoked)
            members.keys.apply(revoked.id, revoked.model_dump_json().encode())
            log.info("API key %s revoked: its member %s left", record.id, member_id)
        return len(bound)
    except (nats.errors.Error, ConnectionError, TimeoutError, OSError) as exc:
        log.warning("keys bound to member %s are not revoked: %r", member_id, exc)
        return 0
