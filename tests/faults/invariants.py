"""The invariant checker: every accepted write has its effects exactly once, the DLQ holds only
the deliberate poison, no consumer is stuck. Each check returns the problems it found."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from sarafan.nats_auth import ADMIN_USER, CONSUMERS
from shared.bus import DLQ_STREAM
from tests.faults.flow import CAMPAIGN_SCORING, Client, Ledger
from tests.faults.stack import FaultStack

#: The platform's default weights.
ENGAGEMENT_POINTS = {"joined": 1, "post": 5, "comment": 2, "referral": 15}
CONVERGE_TIMEOUT = 90.0


async def admin_nats(stack: FaultStack) -> NatsClient:
    """The operator's NATS connection (straight to the servers, never through the proxy)."""
    return await nats.connect(
        servers=stack.admin_urls(),
        user=ADMIN_USER,
        password=stack.admin_password,
        connect_timeout=2,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        allow_reconnect=True,
    )


async def dlq_last_seq(nc: NatsClient) -> int:
    info = await nc.jetstream().stream_info(DLQ_STREAM)
    return int(info.state.last_seq)


async def publish_poison(nc: NatsClient, ledger: Ledger) -> None:
    """One message no consumer can parse on each of MEMBERS and ENGAGEMENT, on purpose."""
    js = nc.jetstream()
    for subject, stream in (
        (f"members.member-joined.poison-{ledger.tag}", "MEMBERS"),
        (f"engagement.post-created.poison-{ledger.tag}", "ENGAGEMENT"),
    ):
        await js.publish(
            subject, b'{"poison": true}', stream=stream, headers={"Nats-Msg-Id": uuid.uuid4().hex}
        )
        ledger.poisons.append(subject)


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching with `*` and `>`."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


async def _consumers(nc: NatsClient) -> list[Any]:
    js = nc.jetstream()
    pairs = [pair for service in CONSUMERS.values() for pair in service]
    return [await js.consumer_info(stream, durable) for stream, durable in pairs]


async def consumers_problems(nc: NatsClient) -> list[str]:
    problems = []
    for info in await _consumers(nc):
        if info.num_pending or info.num_ack_pending:
            problems.append(
                f"consumer {info.name}: {info.num_pending} pending, "
                f"{info.num_ack_pending} awaiting ack"
            )
    return problems


async def dlq_problems(nc: NatsClient, ledger: Ledger, after_seq: int) -> list[str]:
    """The DLQ entries since `after_seq` are exactly (consumer, poison) for every consumer whose
    filter takes a poison subject: nothing else dead-lettered, nothing missing, nothing twice."""
    js = nc.jetstream()
    expected = Counter()
    for info in await _consumers(nc):
        filters = info.config.filter_subjects or [info.config.filter_subject or ">"]
        for subject in ledger.poisons:
            stream = "MEMBERS" if subject.startswith("members.") else "ENGAGEMENT"
            if info.stream_name == stream and any(_matches(f, subject) for f in filters):
                expected[(info.name, subject)] += 1
    last = await dlq_last_seq(nc)
    seen: Counter[tuple[str, str]] = Counter()
    for seq in range(after_seq + 1, last + 1):
        msg = await js.get_msg(DLQ_STREAM, seq)
        headers = msg.headers or {}
        seen[
            (headers.get("Sarafan-Dlq-Consumer", "?"), headers.get("Sarafan-Dlq-Subject", "?"))
        ] += 1
    if seen == expected:
        return []
    return [f"DLQ holds {dict(seen)}, expected exactly {dict(expected)}"]


async def _all_pages(client: Client, service: str, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(service, path, **params)
        r.raise_for_status()
        page = r.json()
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def expected_points(ledger: Ledger) -> dict[str, dict[str, tuple[float, float]]]:
    """Per member, the (least, most) engagement points and campaign points: accepted writes
    count once; writes whose outcome the client never learnt may count once or not at all."""
    eng: Counter[str] = Counter()
    camp: Counter[str] = Counter()
    doubt_eng: Counter[str] = Counter()
    doubt_camp: Counter[str] = Counter()
    seeds = set(ledger.seeds)
    # A referral counts once the referred member posts or comments (a sign-up alone does not).
    active = set(ledger.posts.values()) | set(ledger.comments.values())
    maybe_active = {b["author_id"] for kind, b in ledger.in_doubt if kind in ("post", "comment")}
    for mid, referrer in ledger.members.items():
        eng[mid] += ENGAGEMENT_POINTS["joined"]
        if mid not in seeds:  # seeds joined before the campaign started
            camp[mid] += CAMPAIGN_SCORING["member-joined"]
        if referrer and mid in active:
            eng[referrer] += ENGAGEMENT_POINTS["referral"]
            camp[referrer] += CAMPAIGN_SCORING["referral-made"]
        elif referrer and mid in maybe_active:
            doubt_eng[referrer] += ENGAGEMENT_POINTS["referral"]
            doubt_camp[referrer] += CAMPAIGN_SCORING["referral-made"]
    for author in ledger.posts.values():
        eng[author] += ENGAGEMENT_POINTS["post"]
        camp[author] += CAMPAIGN_SCORING["post-created"]
    for author in ledger.comments.values():
        eng[author] += ENGAGEMENT_POINTS["comment"]
        camp[author] += CAMPAIGN_SCORING["comment-added"]
    for kind, body in ledger.in_doubt:
        # A join in doubt refers nobody who scores: its member is unknown, so never active.
        if kind == "post":
            doubt_eng[body["author_id"]] += ENGAGEMENT_POINTS["post"]
            doubt_camp[body["author_id"]] += CAMPAIGN_SCORING["post-created"]
        elif kind == "comment":
            doubt_eng[body["author_id"]] += ENGAGEMENT_POINTS["comment"]
            doubt_camp[body["author_id"]] += CAMPAIGN_SCORING["comment-added"]
    return {
        "engagement": {m: (eng[m], eng[m] + doubt_eng[m]) for m in ledger.members},
        "campaign": {m: (camp[m], camp[m] + doubt_camp[m]) for m in set(camp) | set(doubt_camp)},
    }


async def effects_problems(client: Client, ledger: Ledger) -> list[str]:
    """Welcome once per accepted member; engagement points and campaign points as recomputed."""
    problems: list[str] = []
    expected = expected_points(ledger)
    gate = asyncio.Semaphore(8)

    async def member(mid: str) -> None:
        async with gate:
            inbox = await _all_pages(client, "notifier", f"/v1/members/{mid}/inbox")
            welcomes = sum(1 for item in inbox if item["template"] == "welcome")
            if welcomes != 1:
                problems.append(f"member {mid}: {welcomes} welcome messages")
            r = await client.get("engagement", f"/v1/members/{mid}/engagement")
            if r.status_code != 200:
                problems.append(f"engagement of {mid}: HTTP {r.status_code}")
                return
            points = r.json()["points_total"]
            low, high = expected["engagement"][mid]
            if not low - 1e-6 <= points <= high + 1e-6:
                problems.append(f"engagement points of {mid}: {points}, expected {low}..{high}")

    await asyncio.gather(*(member(mid) for mid in ledger.members))
    board = await _all_pages(client, "campaigns", f"/v1/campaigns/{ledger.campaign_id}/leaderboard")
    points = {row["member_id"]: row["points"] for row in board}
    # A join whose answer the client never saw may have created a member the ledger cannot
    # name: it may hold the join's own points, once per such join, and nothing more.
    doubtful_joins = sum(1 for kind, _ in ledger.in_doubt if kind == "join")
    unknown = 0
    for mid in set(points) | set(expected["campaign"]):
        low, high = expected["campaign"].get(mid, (0.0, 0.0))
        got = points.get(mid, 0.0)
        if mid not in ledger.members and mid not in expected["campaign"] and doubtful_joins:
            unknown += 1
            high = CAMPAIGN_SCORING["member-joined"]
        if not low - 1e-6 <= got <= high + 1e-6:
            problems.append(f"campaign points of {mid}: {got}, expected {low}..{high}")
    if unknown > doubtful_joins:
        problems.append(
            f"{unknown} unknown members scored, but only {doubtful_joins} joins in doubt"
        )
    return problems


async def converge(
    stack: FaultStack, client: Client, nc: NatsClient, ledger: Ledger, dlq_after: int
) -> float:
    """Wait until every invariant holds; the seconds it took. Fails with the last problems."""
    started = time.monotonic()
    problems: list[str] = []
    while time.monotonic() - started < CONVERGE_TIMEOUT:
        try:
            problems = await consumers_problems(nc)
            if not problems:
                problems = await effects_problems(client, ledger)
            if not problems:
                problems = await dlq_problems(nc, ledger, dlq_after)
        except Exception as exc:  # a service still restarting: look again
            problems = [f"{type(exc).__name__}: {exc}"]
        if not problems:
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    shown = "\n  ".join(problems[:20])
    raise AssertionError(f"invariants still broken after {CONVERGE_TIMEOUT}s:\n  {shown}")
