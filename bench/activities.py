"""Activities: one activity of 5,000 sign-ups (sign-up under load, the reminder fan-out, the
no-show job), and sign-up, check-in and the activity page with 10 and with 10,000 activities.

Each part runs on its own `sarafan up` (every service, nats-server, nx-27017, free ports, a
temporary home); members are imported first (`POST /v1/members/import`) and the benchmark waits
until every consumer of their member-joined caught up (the activities and notifier projections).

1. Activity A: `--shifts` shifts at the same time two days ahead, seats for `--fill` of the
   sign-ups; `--signups` members each sign up for one shift, `--clients` at a time: latency
   p50/p99, sign-ups/s, the share confirmed and waitlisted, beside the bare baseline
   (bench/bare_app.py: FastAPI and one insert) under the same load on the same servers.
   Activity B: as many shifts, seats for everyone, one reminder lead time, its shifts starting
   soon enough that the reminders fall due during the run (after every sign-up is in, planned
   from how fast A's went) and ending a minute later. The notifier's reminder job runs every
   second and the no-show grace is 0 on this stack. Timed from the due instant: the first batch
   taken, every in-app reminder in the inbox (the last of their notification-sent in JetStream,
   published once written), every reminder closed (polled); beside one raw `insert_many` of as
   many copies of those in-app deliveries into a collection with the same indexes. Then from the shifts' end: every `no-show` in JetStream
   (their JetStream timestamps), beside a bare pipeline (one `bulk_write` marking as many copies
   of the sign-ups, and as many publishes of the same events, 100 in flight).
2. `--samples` sequential sign-ups, coordinator check-ins, self check-ins by code and
   `GET /v1/activities/{id}` on a fresh probe activity with 10 activities stored, then again on
   a second probe after seeding up to `--activities` through the API (`--seed-clients`
   concurrent `POST /v1/activities`, two shifts each, published); p50/p99 and the ratio.

Run: .venv/bin/python -m bench.activities [--signups 5000 --shifts 20 --activities 10000]
     .venv/bin/python -m bench.activities --quick     (500 sign-ups, 1,000 activities)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from pymongo import UpdateOne

from bench.scale import import_members
from bench.stack import (
    TOKEN,
    bare_service,
    cpu_seconds,
    emit,
    machine,
    percentile,
    rss_mib,
    running_stack,
    write_section,
)
from sarafan.nats_auth import ADMIN_USER
from sarafan.stack_config import StackDatabases, mongo_name
from sarafan.supervisor import Stack, nats_passwords
from shared.clock import epoch_ms, utcnow
from shared.documents import Doc
from shared.topology import STREAMS

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Part 1's stack: the jobs it times run every second, no-shows at the shift's end.
FAST_JOBS = {
    "SARAFAN_NOSHOW_GRACE_MINUTES": "0",
    "SARAFAN_ACTIVITIES_CLOSE_SECONDS": "1",
    "SARAFAN_NOTIFIER_REMINDER_SECONDS": "1",
}
#: Activity B: its reminder lead time, and how long its shifts last (then the no-shows).
LEAD_MINUTES = 2
B_SHIFT_MINUTES = 1
TITLE = "Activities: sign-ups, reminders, no-shows; the cost with few or many activities stored"


@dataclass
class Session:
    stack: Stack
    http: httpx.AsyncClient  # the activities service
    members: httpx.AsyncClient
    js: Any
    mongo: StackDatabases


@asynccontextmanager
async def session(stack: Stack) -> AsyncIterator[Session]:
    cfg = stack.config
    password = nats_passwords(cfg.home)[ADMIN_USER]
    nc = await nats.connect(cfg.nats_url, user=ADMIN_USER, password=password)
    mongo = StackDatabases(cfg, tz_aware=True)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    http = httpx.AsyncClient(
        base_url=cfg.service_url("activities"), headers=AUTH, timeout=120, limits=limits
    )
    members = httpx.AsyncClient(base_url=cfg.service_url("members"), headers=AUTH, timeout=600)
    try:
        yield Session(stack, http, members, nc.jetstream(timeout=30), mongo)
    finally:
        await http.aclose()
        await members.aclose()
        await mongo.close()
        await nc.close()


def stack_cpu(stack: Stack) -> float:
    """CPU seconds used so far by the services and nx-27017 (not nats-server: the benchmark's
    own polling of it would count)."""
    names = (*stack.services, *(mongo_name(n) for n in stack.services))
    return cpu_seconds(*(stack.children[n].pid or 0 for n in names if n in stack.children))


# -- waiting --------------------------------------------------------------------------------


async def quiesce(js: Any, still_seconds: float = 1.0, timeout: float = 3600) -> None:
    """Until every durable consumer of every stream has nothing pending and no stream grew for
    `still_seconds` (the outboxes drained)."""
    deadline = time.monotonic() + timeout
    still, last = 0.0, None
    while still < still_seconds:
        if time.monotonic() > deadline:
            raise TimeoutError("the stack did not settle")
        busy, sizes = False, []
        for stream in STREAMS.values():
            sizes.append((await js.stream_info(stream)).state.messages)
            for info in await js.consumers_info(stream):
                if not info.name.startswith("bench-") and (
                    info.num_pending or info.num_ack_pending
                ):
                    busy = True
        still = 0.0 if busy or sizes != last else still + 0.2
        last = sizes
        await asyncio.sleep(0.2)


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - utcnow()).total_seconds()))


async def joined_members(s: Session, count: int, first_id: int) -> list[str]:
    """Import `count` members (no welcome) and wait until every consumer projected them."""
    await import_members(s.members, count, utcnow(), first_id=first_id)
    await quiesce(s.js)
    found = s.mongo["sarafan_members"]["members"].find({"status": {"$eq": "active"}}, {"_id": 1})
    ids = sorted([d["_id"] async for d in found])
    known = await s.mongo["sarafan_activities"]["members"].count_documents({})
    assert known >= len(ids), f"the activities service knows {known} of {len(ids)} members"
    return ids


async def stream_events(
    js: Any, subject: str, since: datetime, want: Callable[[Doc], bool], count: int, timeout: float
) -> list[tuple[Doc, float]]:
    """The events on `subject` stored since `since` that `want` accepts, with their JetStream
    timestamps (epoch seconds), until `count` are found or `timeout` passes."""
    stream = STREAMS[subject.split(".", 1)[0]]
    name = f"bench-{uuid.uuid4().hex[:8]}"
    await js.add_consumer(
        stream,
        ConsumerConfig(durable_name=name, deliver_policy=DeliverPolicy.BY_START_TIME,
                       opt_start_time=since - timedelta(seconds=1), filter_subject=subject,
                       ack_policy=AckPolicy.NONE),
    )  # fmt: skip
    found: list[tuple[Doc, float]] = []
    deadline = time.monotonic() + timeout
    try:
        sub = await js.pull_subscribe_bind(durable=name, stream=stream)
        while len(found) < count and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(500, timeout=1)
            except TimeoutError:  # nats-py raises its own subclass, or the builtin itself
                continue
            for msg in msgs:
                event = json.loads(msg.data)
                if want(event.get("data") or {}):
                    found.append((event, msg.metadata.timestamp.timestamp()))
    finally:
        await js.delete_consumer(stream, name)
    return found


# -- the API --------------------------------------------------------------------------------


def shift(role: str, starts: datetime, ends: datetime, capacity: int) -> Doc:
    return {"role": role, "starts_at": starts.isoformat(), "ends_at": ends.isoformat(),
            "capacity": capacity}  # fmt: skip


def activity_body(title: str, shifts: list[Doc], reminders: list[int] | None = None) -> Doc:
    body = {"title": title, "description": "Bench", "region": "region-00",
            "location": "Bitsa park", "timezone": "Europe/Moscow", "organiser_id": "bench",
            "shifts": shifts, "status": "published"}  # fmt: skip
    if reminders is not None:
        body["reminders_minutes"] = reminders
    return body


async def create(http: httpx.AsyncClient, body: Doc) -> Doc:
    r = await http.post("/v1/activities", json=body)
    assert r.status_code == 201, r.text[:500]
    return r.json()


async def sign_up_all(
    http: httpx.AsyncClient, activity_id: str, pairs: list[tuple[str, str]], clients: int
) -> tuple[list[float], Counter[str], float]:
    """Each (member, shift) signed up, `clients` requests in flight: latencies (ms), the
    statuses answered, the seconds it all took."""
    queue = list(reversed(pairs))
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: list[str] = []

    async def worker() -> None:
        while queue:
            member, shift_id = queue.pop()
            path = f"/v1/activities/{activity_id}/shifts/{shift_id}/signups"
            started = time.perf_counter()
            r = await http.post(path, json={"member_id": member})
            latencies.append((time.perf_counter() - started) * 1000)
            if r.status_code in (200, 201):
                statuses[r.json()["status"]] += 1
            else:
                errors.append(f"{r.status_code} {r.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    assert not errors, f"{len(errors)} sign-ups refused, first: {errors[0]}"
    return latencies, statuses, elapsed


async def bare_load(url: str, count: int, clients: int) -> tuple[list[float], float]:
    """The bare baseline's insert, `count` requests with `clients` in flight."""
    remaining = count
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as c:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                body = {"member_id": uuid.uuid4().hex, "shift_id": "s_bench"}
                started = time.perf_counter()
                r = await c.post(f"{url}/insert", json=body)
                latencies.append((time.perf_counter() - started) * 1000)
                assert r.status_code == 201, r.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, time.perf_counter() - started


def summary(latencies: list[float], cpu_s: float | None = None, calls: int = 0) -> Doc:
    """p50 and p99 of the latencies (ms); CPU ms per call when the CPU seconds are given."""
    out = {"p50_ms": round(percentile(latencies, 50), 1),
           "p99_ms": round(percentile(latencies, 99), 1), "n": len(latencies)}  # fmt: skip
    if cpu_s is not None:
        out["cpu_ms"] = round(cpu_s * 1000 / (calls or len(latencies)), 2)
    return out


# -- part 1: one big activity ---------------------------------------------------------------


async def signup_load(s: Session, args: argparse.Namespace, members: list[str]) -> Doc:
    """Activity A: every member signs up for one of its shifts, `clients` at a time."""
    capacity = max(1, math.ceil(len(members) * args.fill / args.shifts))
    starts = (utcnow() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    shifts = [shift(f"water point {i + 1}", starts, starts + timedelta(hours=3), capacity)
              for i in range(args.shifts)]  # fmt: skip
    a = await create(s.http, activity_body("City marathon", shifts))
    ids = [x["shift_id"] for x in a["shifts"]]
    pairs = [(m, ids[i % len(ids)]) for i, m in enumerate(members)]
    cpu = stack_cpu(s.stack)
    latencies, statuses, elapsed = await sign_up_all(s.http, a["activity_id"], pairs, args.clients)
    await quiesce(s.js)  # the notifier's messages and reminders planned: part of the cost
    cpu = stack_cpu(s.stack) - cpu
    after = (await s.http.get(f"/v1/activities/{a['activity_id']}")).json()
    for x in after["shifts"]:  # no overbooking, nobody lost
        assert x["confirmed"] <= x["capacity"], x
        assert x["confirmed"] + x["waitlisted"] == sum(
            1 for _, sid in pairs if sid == x["shift_id"]
        )
    with bare_service(s.stack, "activities") as (bare, pid):
        mongo = s.stack.children[mongo_name("activities")].pid or 0
        bare_cpu = cpu_seconds(pid, mongo)
        bare_latencies, bare_elapsed = await bare_load(bare, len(pairs), args.clients)
        bare_cpu = cpu_seconds(pid, mongo) - bare_cpu
    return {"capacity": capacity, "sarafan": summary(latencies, cpu),
            "per_second": round(len(pairs) / elapsed, 1), "statuses": dict(statuses),
            "bare": summary(bare_latencies, bare_cpu),
            "bare_per_second": round(len(pairs) / bare_elapsed, 1)}  # fmt: skip


async def reminders_due(s: Session, activity: Doc, due: datetime, n: int) -> Doc:
    """From the due instant until every reminder of the activity is closed (polled), then
    when each was written (its batch's start) and its notification-sent published."""
    reminders = s.mongo["sarafan_notifier"]["reminders"]
    aid = activity["activity_id"]
    planned = {"activity_id": {"$eq": aid}, "status": {"$eq": "planned"}}
    await sleep_until(due)
    while await reminders.count_documents(planned):
        if (utcnow() - due).total_seconds() > 600:
            raise TimeoutError("reminders still planned 10 minutes after they fell due")
        await asyncio.sleep(0.2)
    closed_s = (utcnow() - due).total_seconds()
    outcomes = Counter([d["status"] async for d in reminders.find({"activity_id": {"$eq": aid}})])
    ids = [d["_id"] async for d in reminders.find({"activity_id": {"$eq": aid}}, {"_id": 1})]
    causes = [f"reminder:{i}" for i in ids]
    docs: list[Doc] = []
    deliveries = s.mongo["sarafan_notifier"]["deliveries"]
    for first in range(0, len(causes), 500):
        query = {
            "cause_event_id": {"$in": causes[first : first + 500]},
            "channel": {"$eq": "inapp"},
        }
        docs += await deliveries.find(query).to_list(None)
    assert len(docs) == n, f"{len(docs)} in-app reminders written, {n} expected ({outcomes})"
    wanted = {d["_id"] for d in docs}
    sent = await stream_events(s.js, "notifier.notification-sent.>", due,
                               lambda data: data.get("notification_id") in wanted, n, 300)  # fmt: skip
    written = sorted(int(d["created_ms"]) for d in docs)
    return {"reminders": n, "outcomes": dict(outcomes),
            "first_written_s": round((written[0] - epoch_ms(due)) / 1000, 2),
            "all_closed_s": round(closed_s, 2),
            "all_published_s": round(max(t for _, t in sent) - due.timestamp(), 2),
            "published": len(sent), "docs": docs}  # fmt: skip


async def raw_deliveries(s: Session, docs: list[Doc]) -> float:
    """One insert_many of copies of the deliveries (new ids) into a collection with the
    deliveries' indexes, on the same server."""
    source = s.mongo["sarafan_notifier"]["deliveries"]
    target = s.mongo["bench_raw"]["deliveries"]
    await target.drop()
    for name, spec in (await source.index_information()).items():
        if name != "_id_":
            options = {k: v for k, v in spec.items() if k in ("unique", "sparse")}
            await target.create_index(spec["key"], name=name, **options)
    copies = [{**d, "_id": uuid.uuid4().hex} for d in docs]
    started = time.perf_counter()
    await target.insert_many(copies, ordered=False)
    elapsed = time.perf_counter() - started
    await s.mongo.drop_database("bench_raw")
    return elapsed


async def raw_noshows(s: Session, events: list[Doc]) -> float:
    """What any no-show job must at least do: one bulk_write marking copies of the sign-ups,
    and the events published (100 in flight) to a scratch stream on the same servers."""
    signups = s.mongo["sarafan_activities"]["signups"]
    ids = [e["data"]["signup_id"] for e in events]
    copies = await signups.find({"_id": {"$in": ids}}).to_list(None)
    target = s.mongo["bench_raw"]["signups"]
    await target.insert_many([{**d, "att": None} for d in copies], ordered=False)
    await s.js.add_stream(StreamConfig(name="BENCHRAW", subjects=["benchraw.>"],
                                       storage=StorageType.FILE))  # fmt: skip
    payloads = [json.dumps(e).encode() for e in events]
    started = time.perf_counter()
    await target.bulk_write(
        [UpdateOne({"_id": i}, {"$set": {"att": "no-show"}}) for i in ids], ordered=False
    )
    for first in range(0, len(payloads), 100):
        await asyncio.gather(*(s.js.publish(f"benchraw.no-show.{first + i}", p, stream="BENCHRAW")
                               for i, p in enumerate(payloads[first : first + 100])))  # fmt: skip
    elapsed = time.perf_counter() - started
    await s.js.delete_stream("BENCHRAW")
    await s.mongo.drop_database("bench_raw")
    return elapsed


async def reminders_and_noshows(
    s: Session, args: argparse.Namespace, members: list[str], per_second: float
) -> Doc:
    """Activity B: everyone confirmed, reminders due at once, then every one a no-show."""
    n = len(members)
    # Due once every sign-up is in and planned: budgeted from activity A's pace.
    budget = max(30.0, 2.5 * n / per_second + 20)
    due = (utcnow() + timedelta(seconds=budget)).replace(microsecond=0) + timedelta(seconds=1)
    starts = due + timedelta(minutes=LEAD_MINUTES)
    ends = starts + timedelta(minutes=B_SHIFT_MINUTES)
    capacity = math.ceil(n / args.shifts)
    shifts = [shift(f"point {i + 1}", starts, ends, capacity) for i in range(args.shifts)]
    b = await create(s.http, activity_body("Clean-up", shifts, [LEAD_MINUTES]))
    ids = [x["shift_id"] for x in b["shifts"]]
    pairs = [(m, ids[i % len(ids)]) for i, m in enumerate(members)]
    latencies, statuses, _ = await sign_up_all(s.http, b["activity_id"], pairs, args.clients)
    assert statuses == {"confirmed": n}, statuses
    await quiesce(s.js)
    reminders = s.mongo["sarafan_notifier"]["reminders"]
    planned = await reminders.count_documents({"activity_id": {"$eq": b["activity_id"]}})
    assert planned == n, f"{planned} reminders planned, {n} expected"
    spare = (due - utcnow()).total_seconds()
    if spare < 1:
        raise RuntimeError(f"the sign-ups ended {-spare:.0f} s after the reminders fell due")
    fanout = await reminders_due(s, b, due, n)
    docs = fanout.pop("docs")
    await quiesce(s.js)
    # The no-show job: the shifts end, grace 0, the close job every second.
    aid = b["activity_id"]
    await sleep_until(ends)
    found = await stream_events(s.js, "activities.no-show.>", ends,
                                lambda data: data.get("activity_id") == aid, n, 900)  # fmt: skip
    stamps = sorted(t for _, t in found)
    await quiesce(s.js)
    report = (await s.http.get(f"/v1/activities/{aid}/report")).json()
    assert len(found) == n and report["no_shows"] == n, (len(found), report["no_shows"])
    # Each baseline three times, the median: the machine may be shared.
    raw_insert = statistics.median([await raw_deliveries(s, docs) for _ in range(3)])
    events = [e for e, _ in found]
    raw_noshow = statistics.median([await raw_noshows(s, events) for _ in range(3)])
    return {"signups": summary(latencies), "spare_s": round(spare, 1), **fanout,
            "raw_insert_s": round(raw_insert, 2),
            "ratio": round(fanout["all_published_s"] / raw_insert, 2),
            "noshows": n, "first_noshow_s": round(stamps[0] - ends.timestamp(), 2),
            "all_noshows_s": round(stamps[-1] - ends.timestamp(), 2),
            "raw_noshows_s": round(raw_noshow, 2),
            "noshow_ratio": round((stamps[-1] - ends.timestamp()) / raw_noshow, 2)}  # fmt: skip


async def part_one(args: argparse.Namespace) -> Doc:
    with running_stack(env=FAST_JOBS) as stack:
        async with session(stack) as s:
            started = time.perf_counter()
            members = await joined_members(s, args.signups, first_id=0)
            imported_s = time.perf_counter() - started
            load = await signup_load(s, args, members)
            emit({"benchmark": "activities_signup_load", **load})
            big = await reminders_and_noshows(s, args, members, load["per_second"])
            emit({"benchmark": "activities_reminders_noshows", **big})
            rss = {n: rss_mib(stack.children[n].pid) for n in ("activities", "notifier")}
    return {"members": len(members), "import_s": round(imported_s, 1), "load": load,
            "big": big, "rss_mib": rss}  # fmt: skip


# -- part 2: the cost with 10 or 10,000 activities stored -----------------------------------


async def seed(http: httpx.AsyncClient, count: int, clients: int) -> float:
    """`count` published activities of two shifts each (1 to 90 days ahead) through the API,
    `clients` requests in flight; returns activities/s."""
    now = utcnow().replace(second=0, microsecond=0)
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            starts = now + timedelta(days=1 + remaining % 90, hours=remaining % 10)
            shifts = [shift("setup", starts, starts + timedelta(hours=2), 10),
                      shift("main", starts + timedelta(hours=2), starts + timedelta(hours=6), 20)]  # fmt: skip
            await create(http, activity_body(f"Activity {remaining}", shifts))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return count / (time.perf_counter() - started)


async def timed(
    calls: list[Callable[[], Awaitable[httpx.Response]]], ok: int, warm: int = 2
) -> list[float]:
    """One call after another (ms each); the first `warm` are not counted."""
    latencies = []
    for i, call in enumerate(calls):
        started = time.perf_counter()
        r = await call()
        elapsed = (time.perf_counter() - started) * 1000
        assert r.status_code == ok, r.text[:300]
        if i >= warm:
            latencies.append(elapsed)
    return latencies


async def probe(s: Session, members: list[str], samples: int) -> dict[str, Doc]:
    """A fresh activity: a sign-up shift tomorrow, a check-in shift starting in 10 minutes
    with its members signed up first; then each operation `samples` times, one at a time."""
    now = utcnow().replace(microsecond=0)
    n = samples + 2  # two warm-up calls each
    tomorrow = now + timedelta(days=1)
    body = activity_body("Probe", [
        shift("registration", tomorrow, tomorrow + timedelta(hours=2), n),
        shift("planting", now + timedelta(minutes=10), now + timedelta(hours=3), 2 * n),
    ])  # fmt: skip
    a = await create(s.http, body)
    aid = a["activity_id"]
    by_role = {x["role"]: x for x in a["shifts"]}
    desk, field = by_role["registration"]["shift_id"], by_role["planting"]["shift_id"]
    code = by_role["planting"]["checkin_code"]
    signing, by_coordinator, by_code = members[:n], members[n : 2 * n], members[2 * n : 3 * n]
    await sign_up_all(s.http, aid, [(m, field) for m in by_coordinator + by_code], 10)
    h = s.http
    steps: dict[str, tuple[list[Callable[[], Awaitable[httpx.Response]]], int]] = {
        "sign-up": ([lambda m=m: h.post(f"/v1/activities/{aid}/shifts/{desk}/signups",
                                        json={"member_id": m}) for m in signing], 201),
        "check-in by a coordinator": ([lambda m=m: h.post(f"/v1/activities/{aid}/attendance", json={
            "member_id": m, "shift_id": field, "action": "check-in"}) for m in by_coordinator], 200),
        "self check-in by code": ([lambda m=m: h.post("/v1/checkin", json={
            "code": code, "member_id": m}) for m in by_code], 200),
        "GET /v1/activities/{id}": ([lambda: h.get(f"/v1/activities/{aid}")] * n, 200),
    }  # fmt: skip
    results = {}
    for name, (calls, ok) in steps.items():
        await quiesce(s.js)
        cpu = stack_cpu(s.stack)
        latencies = await timed(calls, ok)
        await quiesce(s.js)  # what the calls set off (the notifier's messages) counts too
        results[name] = summary(latencies, stack_cpu(s.stack) - cpu, len(calls))
    return results


async def part_two(args: argparse.Namespace) -> Doc:
    per_phase = 3 * (args.samples + 2)
    with running_stack() as stack:
        async with session(stack) as s:
            members = await joined_members(s, 2 * per_phase, first_id=1_000_000)
            await seed(s.http, 9, args.seed_clients)  # with the probe: 10 stored
            await quiesce(s.js)
            few = await probe(s, members[:per_phase], args.samples)
            emit({"benchmark": "activities_cost_few", **few})
            rate = await seed(s.http, args.activities - 11, args.seed_clients)
            await quiesce(s.js)
            stored = await s.mongo["sarafan_activities"]["activities"].count_documents({}) + 1
            many = await probe(s, members[per_phase:], args.samples)
            emit({"benchmark": "activities_cost_many", **many})
            rss = {n: rss_mib(stack.children[n].pid) for n in ("activities", "notifier")}
    return {"few": few, "many": many, "stored": stored, "seed_per_second": round(rate, 1), "rss_mib": rss}  # fmt: skip


# -- results --------------------------------------------------------------------------------


def write_results(args: argparse.Namespace, one: Doc, two: Doc, loads: tuple[float, float]) -> None:
    load, big = one["load"], one["big"]
    n, st = one["members"], load["statuses"]
    s, b = load["sarafan"], load["bare"]
    rows = []
    for name, few in two["few"].items():
        many = two["many"][name]
        r50, r99 = many["p50_ms"] / few["p50_ms"], many["p99_ms"] / few["p99_ms"]
        rcpu = many["cpu_ms"] / few["cpu_ms"]
        rows.append(f"| {name} | {few['p50_ms']} / {few['p99_ms']} ms, {few['cpu_ms']} ms CPU "
                    f"| {many['p50_ms']} / {many['p99_ms']} ms, {many['cpu_ms']} ms CPU "
                    f"| {r50:.2f} / {r99:.2f} / {rcpu:.2f} | ≤ 1.5× {'✓' if max(r50, r99) <= 1.5 else '✗'} |")  # fmt: skip
    label = "small, shared machine" if args.quick else "full size"
    command = ".venv/bin/python -m bench.activities " + (
        "--quick" if args.quick else f"--signups {args.signups} --shifts {args.shifts} "
        f"--activities {args.activities} --samples {args.samples} --clients {args.clients}")  # fmt: skip
    body = f"""Machine: {machine()}. Command: `{command}` ({label}; load average {loads[0]:.1f} at
the start, {loads[1]:.1f} at the end: 2 cores are busy with other work when it is near 2 or over).
`sarafan up` on free ports (all five services), {n:,} members imported first and projected by
every consumer. Part 1's stack runs the reminder and close jobs every second, no-show grace 0.

**One activity, {args.shifts} shifts, {n:,} sign-ups** ({load["capacity"]} seats a shift), {args.clients} clients at a time,
each sign-up a different member:

| figure | Sarafan | bare baseline (FastAPI + one insert, same load) | ratio |
|---|---|---|---|
| sign-up p50 / p99 | {s["p50_ms"]} / {s["p99_ms"]} ms | {b["p50_ms"]} / {b["p99_ms"]} ms | {s["p50_ms"] / b["p50_ms"]:.1f} / {s["p99_ms"] / b["p99_ms"]:.1f} |
| CPU per sign-up (services and nx-27017; bare: its process and nx-27017) | {s["cpu_ms"]} ms | {b["cpu_ms"]} ms | {s["cpu_ms"] / b["cpu_ms"]:.1f} |
| sign-ups/s | {load["per_second"]} | {load["bare_per_second"]} | {load["per_second"] / load["bare_per_second"]:.2f} |
| confirmed / waitlisted | {st.get("confirmed", 0):,} / {st.get("waitlisted", 0):,} ({st.get("waitlisted", 0) / n:.0%} waitlisted; no shift overbooked) | | |

**Reminders**: a second activity, {args.shifts} shifts with a seat for each of the {n:,} members (sign-up p50 / p99
{big["signups"]["p50_ms"]} / {big["signups"]["p99_ms"]} ms, all confirmed), one lead time of {LEAD_MINUTES} minutes; every reminder due
at the same instant (the last sign-up was in and its reminder planned {big["spare_s"]} s before). Times from that instant:

| figure | Sarafan | raw baseline | ratio |
|---|---|---|---|
| the job takes the first batch (it runs every second) | {big["first_written_s"]} s | | |
| all {n:,} in-app reminders in the inbox: the last of their {big["published"]:,} notification-sent in JetStream (published once written) | {big["all_published_s"]} s | one `insert_many` of {n:,} copies, same indexes (median of three): {big["raw_insert_s"]} s | {big["ratio"]} |
| the job done: every reminder closed (polled every 0.2 s) | {big["all_closed_s"]} s | | |

Outcomes: {", ".join(f"{k} {v:,}" for k, v in big["outcomes"].items())}.

**No-shows**: the same shifts end {B_SHIFT_MINUTES} minute after they start with {n:,} confirmed and no check-in; times from
their end (JetStream timestamps):

| figure | Sarafan | bare baseline | ratio |
|---|---|---|---|
| first `no-show` published | {big["first_noshow_s"]} s | | |
| all {big["noshows"]:,} `no-show` published | {big["all_noshows_s"]} s | one `bulk_write` marking {n:,} copies of the sign-ups + {n:,} publishes, 100 in flight (median of three): {big["raw_noshows_s"]} s | {big["noshow_ratio"]} |

**With 10 and with {two["stored"]:,} activities stored**: a fresh probe activity each time, {args.samples} calls of each,
one at a time after two warm-ups, the stack settled between kinds. CPU a call: the services' and nx-27017's
CPU time from the first call until the stack settled after the last (the notifier's messages included), per call:
steadier than latencies when other work shares the machine. The {two["stored"] - 10:,} extra activities (two shifts
each, published) were created through the API, {args.seed_clients} requests in flight: {two["seed_per_second"]} activities/s.

| operation | 10 stored: p50 / p99, CPU a call | {two["stored"]:,} stored: p50 / p99, CPU a call | ratio p50 / p99 / CPU | target (latency) |
|---|---|---|---|---|
{chr(10).join(rows)}

Resident memory (MiB) after part 1: {", ".join(f"{k} {v}" for k, v in one["rss_mib"].items())}; after part 2: {", ".join(f"{k} {v}" for k, v in two["rss_mib"].items())}.
"""
    write_section(TITLE + (": small run" if args.quick else ""), body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signups", type=int, default=5000)
    parser.add_argument("--shifts", type=int, default=20)
    parser.add_argument("--activities", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50, help="sign-ups in flight")
    parser.add_argument("--fill", type=float, default=0.8, help="seats per sign-up in part 1")
    parser.add_argument("--samples", type=int, default=200, help="calls of each kind, part 2")
    parser.add_argument("--seed-clients", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="500 sign-ups, 1,000 activities")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    parser.add_argument("--part", type=int, choices=(1, 2), help="run one part only (no write)")
    args = parser.parse_args()
    # Stopped from outside (`timeout`, a CI job): unwind, so every stack stops its children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.signups, args.activities, args.samples = 500, 1000, 100
    if args.part:
        emit(asyncio.run((part_one if args.part == 1 else part_two)(args)))
        return
    loads = os.getloadavg()[0]
    one = asyncio.run(part_one(args))
    two = asyncio.run(part_two(args))
    emit({"benchmark": "activities", "part_one": one, "part_two": two})
    if not args.no_write:
        write_results(args, one, two, (loads, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
