"""Burst: N members joining within one week, then the "top N" reads a coordinator opens.

A campaign that brings 10,000 people in a month is when a coordinator opens the new-promising
segment: every one of them is in the same weekly cohort, and a ranking that sorts the cohort
instead of reading an index in order costs what the cohort holds. Two modes:

- the stack (default): `sarafan up` on free ports; a fresh community (`--fresh` members who
  joined over a year, a third of them posting in the last month) and its reads; then `--burst`
  members imported (`POST /v1/members/import`, the real endpoint) with their joins spread over
  one week (one cohort), 30 % of them posting one to four times since; every event goes through
  JetStream to the real consumers. The same reads again: p50/p99 of `--samples` each.
- `--store N`: no stack, one nx-27017; N members joining within one week written as the service
  writes them (`MemberEvents.apply` and `Activity.record` in batches of 100, the
  consumers' batch), then the engagement reads timed on the store (p50 of `--samples`), and
  the new-promising query's plans printed: nx-27017's explain (the filter only) and SQLite's
  plan of the statement as run (its ORDER BY and LIMIT too). It uses only interfaces older
  versions share, so the same file measures a checkout before a change
  (`PYTHONPATH=<checkout> python bench/burst.py --store 5000`).

Run: .venv/bin/python -m bench.burst [--burst 10000] [--fresh 500] [--samples 30]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import monitoring

READS = {
    "segment new-promising": "/v1/segments/new-promising?limit=20",
    "segment loyal": "/v1/segments/loyal?limit=20",
    "leaderboard 7d": "/v1/leaderboard?period=7d",
    "leaderboard 30d": "/v1/leaderboard?period=30d",
    "leaderboard all": "/v1/leaderboard?period=all",
    "leaderboard all, one region": "/v1/leaderboard?period=all&region=region-03",
}
REGIONS = [f"region-{i:02d}" for i in range(40)]
WEEK = timedelta(days=7)


def burst_week(now: datetime) -> tuple[datetime, datetime]:
    """The joins' week: one weekly cohort (`joined_ms // week`), ending now when the current
    one is at least a day old, else the whole previous one."""
    week_ms = int(WEEK.total_seconds() * 1000)
    now_ms = int(now.timestamp() * 1000)
    start_ms = now_ms // week_ms * week_ms
    if now_ms - start_ms < 86_400_000:
        start_ms -= week_ms
    start = datetime.fromtimestamp(start_ms / 1000, now.tzinfo)
    return start, min(start + WEEK - timedelta(milliseconds=1), now)


def joined_times(
    count: int, first: datetime, last: datetime, rnd: random.Random, grain: float = 0.0
) -> list[datetime]:
    """Join times spread over [first, last], on a `grain` of seconds when one is given (an
    import or a sign-up drive brings many at the same moment: their scores tie)."""
    span = (last - first).total_seconds()
    offsets = [rnd.uniform(0, span) for _ in range(count)]
    if grain:
        offsets = [o - o % grain for o in offsets]
    return [first + timedelta(seconds=o) for o in offsets]


def post_times(joined: datetime, now: datetime, rnd: random.Random) -> list[datetime]:
    """What a member who posts did since joining: one to four posts."""
    span = max((now - joined).total_seconds(), 1.0)
    return [joined + timedelta(seconds=rnd.uniform(0, span)) for _ in range(rnd.randint(1, 4))]


# -- the stack ---------------------------------------------------------------------------------


async def timed(call: Callable[[], Awaitable[Any]], samples: int) -> list[float]:
    for _ in range(2):
        await call()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def import_rows(joins: list[datetime], first_id: int) -> list[dict[str, Any]]:
    return [
        {
            "display_name": f"Volunteer {first_id + i}",
            "email": f"b{first_id + i}@bench.example.org",
            "region": REGIONS[(first_id + i) % len(REGIONS)],
            "roles": ["volunteer"],
            "locale": "ru",
            "consent_terms": True,
            "consent_marketing": False,
            "joined_at": at.isoformat(),
            "consent_at": at.isoformat(),
            "consent_source": "bench burst",
        }
        for i, at in enumerate(joins)
    ]


async def stack_reads(engagement: Any, samples: int) -> dict[str, list[float]]:
    async def get(path: str) -> None:
        r = await engagement.get(path)
        assert r.status_code == 200, r.text

    return {name: await timed(lambda p=path: get(p), samples) for name, path in READS.items()}


async def grow(
    clients: dict[str, Any],
    js: Any,
    mongo: Any,
    joins: list[datetime],
    first_id: int,
    now: datetime,
) -> float:
    """Import members who joined at `joins`, some of them posting since: seconds until every
    consumer absorbed it all (`mongo` reaches the members service's database)."""
    from bench.scale import MEMBER_CONSUMERS, publish_all, quiesce, wait_absorbed
    from shared.bus import STREAMS
    from shared.events import PostCreated, new_event

    members = mongo["sarafan_members"]["members"]
    before = {d["_id"] async for d in members.find({}, {"_id": 1})}
    started = time.perf_counter()
    rows = import_rows(joins, first_id)
    for first in range(0, len(rows), 10_000):
        body = "\n".join(json.dumps(r) for r in rows[first : first + 10_000]) + "\n"
        r = await clients["members"].post(
            "/v1/members/import",
            params={"welcome": "false", "first_row": first + 1, "file": f"burst-{first_id}"},
            content=body.encode(),
            headers={"Content-Type": "application/x-ndjson"},
            timeout=600,
        )
        assert r.status_code == 200 and r.json()["rejected"] == 0, r.text[:500]
    await wait_absorbed(js, "MEMBERS", MEMBER_CONSUMERS, 3600)
    rnd = random.Random(first_id)
    events = []
    async for doc in members.find({}, {"_id": 1, "joined_at_ms": 1}):
        if doc["_id"] in before or rnd.random() > 0.3:
            continue
        joined = datetime.fromtimestamp(doc.get("joined_at_ms", 0) / 1000, now.tzinfo)
        for at in post_times(min(joined, now), now, rnd):
            events.append(
                new_event(PostCreated(post_id=str(uuid.uuid4()), author_id=doc["_id"],
                                      kind="post", title="t", created_at=at))
            )  # fmt: skip
    await publish_all(js, events, STREAMS["engagement"])
    await wait_absorbed(js, "ENGAGEMENT", ("engagement-activity",), 3600)
    await quiesce(js)
    return time.perf_counter() - started


async def run_stack(args: argparse.Namespace) -> None:
    import httpx
    import nats
    from pymongo import AsyncMongoClient

    from bench.stack import TOKEN, emit, running_stack
    from sarafan.nats_auth import ADMIN_USER
    from sarafan.supervisor import nats_passwords
    from shared.events import utcnow

    with running_stack() as stack:
        cfg = stack.config
        clients = {
            name: httpx.AsyncClient(base_url=cfg.service_url(name), timeout=120,
                                    headers={"Authorization": f"Bearer {TOKEN}"})
            for name in stack.services
        }  # fmt: skip
        nc = await nats.connect(cfg.nats_url, user=ADMIN_USER,
                                password=nats_passwords(cfg.home)[ADMIN_USER])  # fmt: skip
        mongo: AsyncMongoClient = AsyncMongoClient(members_database(cfg), tz_aware=True)
        try:
            js = nc.jetstream(timeout=30)
            now, rnd = utcnow(), random.Random(3)
            year = joined_times(args.fresh, now - timedelta(days=365), now, rnd)
            fresh_s = await grow(clients, js, mongo, year, 0, now)
            fresh = await stack_reads(clients["engagement"], args.samples)
            first, last = burst_week(utcnow())
            week = joined_times(args.burst, first, last, rnd, args.grain)
            burst_s = await grow(clients, js, mongo, week, 1_000_000, utcnow())
            burst = await stack_reads(clients["engagement"], args.samples)
        finally:
            await mongo.close()
            await nc.close()
            for client in clients.values():
                await client.aclose()
    result = {"benchmark": "burst", "fresh_members": args.fresh, "burst_members": args.burst,
              "fresh_seed_s": round(fresh_s, 1), "burst_seed_s": round(burst_s, 1),
              "fresh_ms": summary(fresh), "burst_ms": summary(burst)}  # fmt: skip
    emit(result)
    if args.write:
        write_results(args, result)


def members_database(cfg: Any) -> str:
    """Where the members service's database is: one nx-27017 for all, or one per service
    (`mongodb_url(service)`)."""
    url = cfg.mongodb_url
    return str(url("members") if callable(url) else url)


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    from bench.stack import percentile

    return {
        name: {"p50": round(percentile(t, 50), 1), "p99": round(percentile(t, 99), 1)}
        for name, t in times.items()
    }


def write_results(args: argparse.Namespace, r: dict[str, Any]) -> None:
    from bench.stack import git_rev, machine, write_section

    rows = []
    for name, fresh in r["fresh_ms"].items():
        burst = r["burst_ms"][name]
        ratio = burst["p50"] / fresh["p50"] if fresh["p50"] else float("nan")
        ok = "✓" if ratio <= 1.5 else "✗"
        rows.append(f"| GET {READS[name]} | {fresh['p50']} / {fresh['p99']} ms | "
                    f"{burst['p50']} / {burst['p99']} ms | {ratio:.2f} | ≤ 1.5× {ok} |")  # fmt: skip
    body = f"""Machine: {machine()}; commit {git_rev()}. Command: `.venv/bin/python -m bench.burst --burst {args.burst} --fresh {args.fresh} --samples {args.samples}`.
`sarafan up` on free ports. Fresh: {args.fresh:,} members imported with joins spread over a year, a
third of them posting one to four times since. Burst: {args.burst:,} more imported with their
joins within one week (one weekly cohort), 30 % of them posting since; every event through
JetStream to the real consumers ({r["fresh_seed_s"]} s and {r["burst_seed_s"]} s until absorbed).
p50 / p99 of {args.samples} sequential requests after two warm-ups.

| read | fresh p50 / p99 | after the burst p50 / p99 | ratio of p50 | target |
|---|---|---|---|---|
{chr(10).join(rows)}
"""
    write_section(f"Burst: {args.burst:,} members joining within one week", body)


# -- the store alone ---------------------------------------------------------------------------


class _NoRelay:
    """Stands in for the outbox relay: events stay in their documents, nothing is published."""

    def watch(self, collection: Any, *, batched: bool = False) -> None:
        pass

    async def committed(self, commit: Any) -> None:
        pass


async def seed_store(db: Any, count: int, now: datetime, grain: float) -> Any:
    """`count` members joining within one week, 30 % posting since, written by the service's
    own use cases in batches of 100; returns the engagement Insights over them."""
    from services.engagement import domain, usecases
    from services.engagement.insights import Insights
    from services.engagement.scoring import Scoring
    from services.engagement.store import EngagementStore
    from shared.events import Consent, Contacts, MemberJoined, PostCreated, new_event
    from shared.uow import UnitOfWork

    store, rules = EngagementStore(db), domain.Rules()
    await store.ensure_indexes()
    scoring = Scoring(store, rules, lambda: UnitOfWork(_NoRelay()))

    async def erase(stream: str, subject: str) -> int:
        return 0

    rnd = random.Random(3)
    first, last = burst_week(now)
    joins, posts = [], []
    for i, at in enumerate(joined_times(count, first, last, rnd, grain)):
        mid = f"m{i:06d}"
        joined = MemberJoined(member_id=mid, display_name=f"V {i}", region=REGIONS[i % 40],
                              roles=["volunteer"], contacts=Contacts(email=f"{mid}@x.org"),
                              consent=Consent(terms=True, marketing=False), joined_at=at)  # fmt: skip
        joins.append((new_event(joined), joined))
        if rnd.random() < 0.3:
            for t in post_times(at, now, rnd):
                post = PostCreated(post_id=str(uuid.uuid4()), author_id=mid, kind="post",
                                   title="t", created_at=t)  # fmt: skip
                posts.append((new_event(post), post))
    if hasattr(usecases, "MemberEvents"):  # the use cases as classes, on the clock given
        ports = inspect.signature(usecases.MemberEvents).parameters
        uow = (scoring.unit_of_work,) if "unit_of_work" in ports else ()  # the staged writes
        members = usecases.MemberEvents(store, *uow, scoring, erase, lambda: now)
        activity = usecases.Activity(store, scoring, lambda: now)
        apply, record = members.apply, activity.record
    else:  # an older checkout: module functions taking their ports
        apply = lambda b: usecases.apply_member_events(b, store, scoring, erase, now)  # noqa: E731
        record = lambda b: usecases.record_activity(b, store, scoring, now)  # noqa: E731
    for k in range(0, len(joins), 100):
        await apply(joins[k : k + 100])
    for k in range(0, len(posts), 100):
        await record(posts[k : k + 100])
    staged = "unit_of_work" in inspect.signature(Insights).parameters
    return Insights(store, rules, scoring.unit_of_work) if staged else Insights(store, rules)


class Finds(monitoring.CommandListener):
    """Records the finds sent on `standing` while `on` (a PyMongo command listener)."""

    def __init__(self) -> None:
        self.on = False
        self.seen: list[dict[str, Any]] = []

    def started(self, event: Any) -> None:
        if self.on and event.command_name == "find" and event.command.get("find") == "standing":
            self.seen.append(dict(event.command))

    def succeeded(self, event: Any) -> None: ...

    def failed(self, event: Any) -> None: ...


async def new_promising_plans(
    finds: Finds, db: Any, insights: Any, now: datetime, path: Path
) -> None:
    """The finds one new-promising page sends, each with nx-27017's explain (the filter only)
    and SQLite's plan of the statement nx-27017 runs for it (with its ORDER BY and LIMIT)."""
    import neosqlite

    finds.on = True
    await insights.segment("new-promising", now, 0, 20)
    finds.on = False
    sqlite = neosqlite.Connection(str(path))
    for command in finds.seen[:3]:
        flt, sort, limit = (
            command.get("filter", {}),
            command.get("sort") or {},
            command.get("limit"),
        )
        nx = await db.command("explain", {"find": "standing", "filter": flt})
        cursor = sqlite["standing"].find(flt)
        where, params, _ = cursor._query_helpers._build_simple_where_clause(flt)
        order = cursor._query_helpers._build_sort_clause(dict(sort))
        statement = f"SELECT id, _id, data FROM standing {where}{order} LIMIT {limit or -1}"
        plan = sqlite.db.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
        print(json.dumps({"filter": flt, "sort": sort, "limit": limit, "skip": command.get("skip"),
                          "nx_explain": [s["detail"] for s in nx["queryPlanner"]["winningPlan"]],
                          "sqlite_plan": [row[3] for row in plan]}, default=str))  # fmt: skip


async def run_store(args: argparse.Namespace) -> None:
    from pymongo import AsyncMongoClient

    from sarafan.embedded import LOCALHOST, free_port, mongo_child
    from shared.clock import utcnow

    with tempfile.TemporaryDirectory(prefix="sarafan-burst-") as home:
        port = free_port()
        child = mongo_child(Path(home), port, journal="wal")  # what `sarafan up` runs
        child.start()
        try:
            child.wait_ready(30)
            finds = Finds()
            client: AsyncMongoClient = AsyncMongoClient(
                f"mongodb://{LOCALHOST}:{port}", tz_aware=True, event_listeners=[finds]
            )
            db, now = client["sarafan_engagement"], utcnow()
            started = time.perf_counter()
            insights = await seed_store(db, args.store, now, args.grain)
            seeded = time.perf_counter() - started
            # The kept counters folded, as the periodic job has done a few minutes later.
            await insights.store.counters.fold(now + timedelta(minutes=15))
            reads = {
                "segment new-promising": lambda: insights.segment("new-promising", now, 0, 20),
                "segment loyal": lambda: insights.segment("loyal", now, 0, 20),
                "leaderboard 7d": lambda: insights.leaderboard("7d", None, 20, now),
                "leaderboard 30d": lambda: insights.leaderboard("30d", None, 20, now),
                "leaderboard all": lambda: insights.leaderboard("all", None, 20, now),
                "stats": lambda: insights.figures(now),
            }
            times = {name: await timed(call, args.samples) for name, call in reads.items()}
            print(json.dumps({"benchmark": "burst_store", "members": args.store,
                              "seed_s": round(seeded, 1),
                              "p50_ms": {n: round(statistics.median(t), 1) for n, t in times.items()},
                              "min_ms": {n: round(min(t), 1) for n, t in times.items()}}))  # fmt: skip
            found = sorted(Path(home).rglob("*engagement*"))
            files = [p for p in found if p.is_file() and _is_sqlite(p)]
            if files:
                await new_promising_plans(finds, db, insights, now, files[0])
            await client.close()
        finally:
            child.stop()


def _is_sqlite(path: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        return True
    except sqlite3.DatabaseError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=10_000, help="members joining in one week")
    parser.add_argument("--fresh", type=int, default=500, help="the fresh community's size")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--grain", type=float, default=0.0,
                        help="join times on this grain of seconds (ties), 0: none")  # fmt: skip
    parser.add_argument("--store", type=int, default=0, help="store level only: this many")
    parser.add_argument("--no-write", dest="write", action="store_false",
                        help="do not write bench/RESULTS.md")  # fmt: skip
    args = parser.parse_args()
    asyncio.run(run_store(args) if args.store else run_stack(args))


if __name__ == "__main__":
    main()
