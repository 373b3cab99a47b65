"""API keys with scopes, shared by every service through a NATS key-value bucket.

A key is shown once, when it is made: `sk_<key id>_<secret>`. What is kept (in the JetStream
key-value bucket `sarafan_keys`, one entry per key id) is its name, scopes, creation time,
optional expiry and revocation, and the SHA-256 of the whole token — never the token. Every
service watches the bucket and keeps the records in memory, so a request costs no round trip
and a revocation takes effect everywhere as soon as the watch delivers it (milliseconds; the
services never read another service's database). `SARAFAN_API_TOKEN` stays the bootstrap key
with every scope and no rate limit, so that `make run` needs nothing more.

Scopes follow Discourse's and GitHub's model: a key per integration, least privilege. A key may
also be bound to a member (`member_id`: it acts as that member only; Discourse's single-user
key, against its "all users" key) and say its own write rate (`rate_per_minute`). Records kept
before either existed load as unbound with the default rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.events import utcnow
from shared.retry import Backoff, retry

log = logging.getLogger("sarafan.keys")

BUCKET = "sarafan_keys"
#: The service that writes keys (its admin endpoint `/v1/keys`); every service reads them.
KEYS_OWNER = "members"
BOOTSTRAP_ID = "bootstrap"

#: Every scope, with what it lets a key do. `admin` implies all of them.
SCOPES: dict[str, str] = {
    "members:join": "join (POST /v1/members): what a sign-up page needs",
    "members:read": "read profiles and lists of members, referrals",
    "members:write": "change profiles, leave, import a volunteer base",
    "members:erase": "leave with erasure of personal data",
    "engagement:read": "read engagement, posts, hours, segments, leaderboards, stats",
    "engagement:write": "post, comment, react, accept answers, record hours",
    "hours:decide": "approve or reject volunteer hours",
    "campaigns:read": "read campaigns, their leaderboards and reports",
    "campaigns:manage": "create, start, end and cancel campaigns",
    "notifier:read": "read inboxes, preferences and the delivery log",
    "notifier:write": "change preferences",
    "activities:read": "read activities, sign-ups, a member's record, reports and stats",
    "activities:manage": "create, change, publish and cancel activities and their shifts",
    "activities:signup": "sign up, confirm and cancel a sign-up, self check-in with a code",
    "activities:checkin": "record attendance on site, see check-in codes, check-in links",
    "admin": "everything, and granting the coordinator or staff role, and managing keys",
}
ADMIN = "admin"
KEY_ID_RE = re.compile(r"^[a-z0-9]{12}$")
TOKEN_RE = re.compile(r"^sk_([a-z0-9]{12})_[A-Za-z0-9_-]{32,64}$")


class KeyRecord(BaseModel):
    """What the bucket keeps of a key (the token itself is never kept)."""

    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    token_sha256: str = Field(repr=False)
    #: The member the key acts as on every write and whose private resources alone it reads
    #: (a volunteer's own app); None: an integration acting for any member.
    member_id: str | None = None
    #: Writes a minute this key may make (per service replica); None: the services' default.
    rate_per_minute: int | None = Field(None, ge=1)

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and scopes (for checks and the audit in events), the
    member it is bound to (None: any member) and its own write rate (None: the default)."""

    key_id: str
    scopes: frozenset[str]
    member_id: str | None = None
    rate_per_minute: int | None = None

    def allows(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes

    @property
    def is_bootstrap(self) -> bool:
        """The operator's key (SARAFAN_API_TOKEN): every scope, any member, no rate limit."""
        return self.key_id == BOOTSTRAP_ID


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_key(
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    *,
    member_id: str | None = None,
    rate_per_minute: int | None = None,
) -> tuple[str, KeyRecord]:
    """A fresh token (to show once) and the record to keep."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    if member_id is not None and ADMIN in scopes:
        # admin makes keys and grants roles: a bound key holding it could mint an unbound one.
        raise ValueError("a key bound to a member cannot hold the scope admin")
    if rate_per_minute is not None and rate_per_minute < 1:
        raise ValueError("rate_per_minute must be at least 1")
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    token = f"sk_{key_id}_{secrets.token_urlsafe(32)}"
    record = KeyRecord(
        id=key_id,
        name=name,
        scopes=sorted(set(scopes)),
        created_at=utcnow(),
        expires_at=expires_at,
        token_sha256=digest(token),
        member_id=member_id,
        rate_per_minute=rate_per_minute,
    )
    return token, record


class KeyRing:
    """The keys this process knows: the bootstrap token, and the bucket's records as watched."""

    def __init__(self, bootstrap_token: str) -> None:
        self.bootstrap = bootstrap_token
        self.records: dict[str, KeyRecord] = {}
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._js: Any = None

    def authenticate(self, token: str, now: datetime | None = None) -> Principal | None:
        """The caller of this token, or None (unknown, expired, revoked)."""
        if self.bootstrap and hmac.compare_digest(token.encode(), self.bootstrap.encode()):
            return Principal(BOOTSTRAP_ID, frozenset({ADMIN}))
        match = TOKEN_RE.fullmatch(token)
        if match is None:
            return None
        record = self.records.get(match.group(1))
        if record is None or not record.usable(now or utcnow()):
            return None
        if not hmac.compare_digest(digest(token), record.token_sha256):
            return None
        return Principal(
            record.id, frozenset(record.scopes), record.member_id, record.rate_per_minute
        )

    def apply(self, key: str, value: bytes | None) -> None:
        """One entry of the bucket as the watch delivers it (None: deleted)."""
        if value is None:
            self.records.pop(key, None)
            return
        try:
            self.records[key] = KeyRecord.model_validate_json(value)
        except ValueError as exc:
            log.error("key record %s is unreadable (%s): refused", key, type(exc).__name__)
            self.records.pop(key, None)

    async def watch(self, js: Any) -> None:
        """Follow the bucket for ever (reconnects come from the NATS client). Whichever
        service starts first creates the bucket (the same configuration from all)."""
        while True:  # a watch that ends by itself is started again
            await retry(lambda: self._follow(js), what=f"watching {BUCKET}", level=logging.DEBUG)

    async def _follow(self, js: Any) -> None:
        kv = await _create(js)
        watcher = await kv.watchall(include_history=False)
        async for entry in _entries(watcher):
            if entry is None:  # the initial values are all in
                self.synced.set()
                continue
            deleted = entry.operation in ("DEL", "PURGE")
            self.apply(entry.key, None if deleted else entry.value)

    def start(self, js: Any) -> None:
        self._js = js
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.watch(js), name="keys-watch")

    # -- the bucket itself (key management: members' /v1/keys and `sarafan keys`) -------------

    def _bucket_js(self) -> Any:
        js = self._js
        if js is None:
            raise ConnectionError("NATS is not connected: the key bucket is unreachable")
        return js

    async def save(self, record: KeyRecord) -> None:
        """Write a key's record to the bucket (every service's watch picks it up)."""
        await put(self._bucket_js(), record)

    async def stored(self) -> list[KeyRecord]:
        """Every record in the bucket, read from it (not this process's watched copy)."""
        return await all_records(self._bucket_js())

    async def stored_one(self, key_id: str) -> KeyRecord | None:
        """One key's record read from the bucket, or None when there is no such key."""
        from nats.js.errors import NotFoundError

        try:
            entry = await (await self._bucket_js().key_value(BUCKET)).get(key_id)
        except NotFoundError:  # no such key, or no key made yet
            return None
        return KeyRecord.model_validate_json(entry.value) if entry.value else None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


async def _create(js: Any) -> Any:
    from nats.js.api import KeyValueConfig

    try:
        return await js.key_value(BUCKET)
    except Exception:
        return await js.create_key_value(KeyValueConfig(bucket=BUCKET, history=1))


async def _entries(watcher: Any) -> Any:
    while True:
        entry = await watcher.updates(timeout=None)
        yield entry


async def put(js: Any, record: KeyRecord) -> None:
    kv = await _create(js)
    await kv.put(record.id, record.model_dump_json().encode())


async def all_records(js: Any, attempts: int = 3) -> list[KeyRecord]:
    """Every record in the bucket. Only "no keys" is an empty list: a listing that timed out
    (a busy server) is tried again, then raised, never answered as "no keys"."""
    import nats.errors
    from nats.js.errors import NoKeysError

    kv = await _create(js)

    async def names() -> list[str]:
        try:
            return list(await kv.keys())
        except NoKeysError:
            return []

    listed = await retry(
        names,
        what=f"listing {BUCKET}",
        backoff=Backoff(0.2, 0.4),
        on=(TimeoutError, nats.errors.Error),
        attempts=attempts,
        level=logging.DEBUG,
    )
    found = []
    for name in listed or []:
        entry = await kv.get(name)
        if entry.value:
            found.append(KeyRecord.model_validate_json(entry.value))
    return sorted(found, key=lambda r: r.created_at)
