"""A steady flow of writes over HTTP, as real clients make them, and the ledger of what was
accepted: every POST carries an Idempotency-Key and is retried on a connection error or 5xx."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.faults.stack import TOKEN, FaultStack
from tests.helpers import wait_until

#: Campaign scoring used by every flow; the invariant checker recomputes points from it.
CAMPAIGN_SCORING = {"post-created": 2, "comment-added": 1, "referral-made": 10, "member-joined": 1}
#: A request whose key stays "in progress" (409) this long is given up: its outcome is unknown.
#: Longer than the kernel's 30 s lease on a started key, after which a retry takes the key
#: over and gets the first outcome (shared/http/idempotency.py), as a patient real client would.
IN_DOUBT_AFTER = 40.0
GIVE_UP_AFTER = 90.0
SEEDS = 5


class Rejected(Exception):
    """The service answered 4xx: the write was refused, not lost."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:300]}")
        self.status = status


class InDoubt(Exception):
    """The client cannot learn whether the write happened (its key stays in progress)."""


@dataclass
class Ledger:
    """Every write the clients saw accepted (2xx), and those whose outcome they never learnt."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    members: dict[str, str | None] = field(default_factory=dict)  # member id -> referrer id
    codes: dict[str, str] = field(default_factory=dict)  # seed id -> referral code
    seeds: list[str] = field(default_factory=list)
    posts: dict[str, str] = field(default_factory=dict)  # post id -> author
    comments: dict[str, str] = field(default_factory=dict)  # comment id -> author
    in_doubt: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (kind, body)
    campaign_id: str = ""
    poisons: list[str] = field(default_factory=list)  # subjects published as poison
    accepted: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    accepted_at: list[float] = field(default_factory=list)  # monotonic time of each 2xx

    def accepted_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.accepted_at if start <= t <= end)


class Client:
    """HTTP client for the stack's services that retries like a careful real client."""

    def __init__(self, stack: FaultStack, ledger: Ledger) -> None:
        self.stack = stack
        self.ledger = ledger
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5.0, trust_env=False
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def get(self, service: str, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(self.stack.url(service) + path, params=params)

    async def post(self, service: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST until a definite answer: the JSON of a 2xx, Rejected on 4xx, InDoubt when the
        key stays in progress (the first attempt may or may not have been done)."""
        key = uuid.uuid4().hex
        url = self.stack.url(service) + path
        started = time.monotonic()
        in_progress_since: float | None = None
        delay = 0.05
        while True:
            try:
                r = await self.http.post(url, json=body or {}, headers={"Idempotency-Key": key})
            except httpx.TransportError as exc:
                self.ledger.errors[type(exc).__name__] += 1
            else:
                if r.status_code < 300:
                    self.ledger.accepted += 1
                    self.ledger.accepted_at.append(time.monotonic())
                    return r.json()
                busy = r.status_code == 409 and "still in progress" in r.text
                if r.status_code < 500 and not busy:
                    raise Rejected(r.status_code, r.text)
                self.ledger.errors[f"http {r.status_code}"] += 1
                if busy:
                    in_progress_since = in_progress_since or time.monotonic()
                    if time.monotonic() - in_progress_since > IN_DOUBT_AFTER:
                        raise InDoubt(f"{path}: key {key} still in progress")
            self.ledger.retries += 1
            if time.monotonic() - started > GIVE_UP_AFTER:
                raise AssertionError(f"POST {path} got no answer within {GIVE_UP_AFTER}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


def join_body(ledger: Ledger, n: int | str, referral_code: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "display_name": f"Member {n}",
        "email": f"m{n}-{ledger.tag}@example.org",
        "region": "kazan",
        "locale": "en",
        # No marketing consent: campaign announcements would only add noise to the inboxes.
        "consent": {"terms": True, "marketing": False},
    }
    if referral_code:
        body["referral_code"] = referral_code
    return body


class Flow:
    """Seeds, a campaign started, then three writers (joins, posts, comments) until stopped."""

    def __init__(self, stack: FaultStack) -> None:
        self.ledger = Ledger()
        self.client = Client(stack, self.ledger)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random(self.ledger.tag)
        self._n = 0

    async def setup(self) -> None:
        """Seed members (known to engagement before they post) and an active campaign."""
        ledger = self.ledger
        for i in range(SEEDS):
            out = await self.client.post("members", "/v1/members", join_body(ledger, f"seed{i}"))
            ledger.members[out["member_id"]] = None
            ledger.codes[out["member_id"]] = out["referral_code"]
            ledger.seeds.append(out["member_id"])
        now = datetime.now(UTC)
        campaign = await self.client.post(
            "campaigns",
            "/v1/campaigns",
            {
                "name": f"Fault drive {ledger.tag}",
                "kind": "referral-drive",
                "starts_at": (now + timedelta(hours=1)).isoformat(),
                "ends_at": (now + timedelta(days=2)).isoformat(),
                "audience": {"regions": [], "roles": [], "min_level": None},
                "scoring": CAMPAIGN_SCORING,
                "milestones": [],
                "winners": 1,
                "announcement": {"ru": "Поехали", "en": "Go"},
            },
        )
        ledger.campaign_id = campaign["campaign_id"]
        await self.client.post("campaigns", f"/v1/campaigns/{ledger.campaign_id}/start")

        async def seeds_known() -> bool:
            for mid in ledger.seeds:
                r = await self.client.get("engagement", f"/v1/members/{mid}/engagement")
                if r.status_code != 200:
                    return False
            return True

        await wait_until(seeds_known, 30, 0.1, "engagement never saw the seed members")

    def start(self) -> None:
        for work in (self._join, self._post, self._comment):
            self._tasks.append(asyncio.create_task(self._loop(work)))

    async def stop(self) -> None:
        """Stop the writers; each finishes (and retries to a definite answer) what it began."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    async def _loop(self, work: Any) -> None:
        while not self._stop.is_set():
            await work()
            await asyncio.sleep(0.03)

    async def _write(self, kind: str, service: str, path: str, body: dict[str, Any]) -> Any:
        try:
            return await self.client.post(service, path, body)
        except InDoubt:
            self.ledger.in_doubt.append((kind, body))
        except Rejected as exc:
            self.ledger.errors[f"rejected {exc.status}"] += 1
        return None

    async def _join(self) -> None:
        self._n += 1
        ledger = self.ledger
        referrer = self._rng.choice(ledger.seeds) if self._n % 3 == 0 else None
        code = ledger.codes[referrer] if referrer else None
        out = await self._write("join", "members", "/v1/members", join_body(ledger, self._n, code))
        if out is not None:
            ledger.members[out["member_id"]] = referrer

    async def _post(self) -> None:
        author = self._rng.choice(self.ledger.seeds)
        body = {"author_id": author, "kind": "post", "title": f"Post by {author[:8]}", "body": "x"}
        out = await self._write("post", "engagement", "/v1/posts", body)
        if out is not None:
            self.ledger.posts[out["post_id"]] = author

    async def _comment(self) -> None:
        if not self.ledger.posts:
            return
        post_id = self._rng.choice(list(self.ledger.posts))
        author = self._rng.choice(self.ledger.seeds)
        body = {"author_id": author, "body": "Thanks!"}
        out = await self._write("comment", "engagement", f"/v1/posts/{post_id}/comments", body)
        if out is not None:
            self.ledger.comments[out["comment_id"]] = author
