"""Scale: the same reads and join → welcome on a fresh stack and on a grown community.

On `sarafan up` (four services, nats-server, nx-27017, free ports, a temporary home):

1. fresh: a handful of members join; measure join → welcome and the reads;
2. grow: import N members (the real endpoint, JSON lines; timed once on a stack of the members
   service alone beside a raw `insert_many` of the same member documents, then again on the
   whole stack until absorbed); publish posts and comments spread over months
   (their documents written as the engagement service writes them, their events through
   JetStream to the real consumers); start two campaigns for everyone (a delivery per member);
3. absorb: publish M more member-joined at once and time every consumer of MEMBERS,
   beside a bare batched pipeline (pull 100, one `bulk_write`, ack) reading the same events;
4. measure the same reads and join → welcome again, and each service's memory.

Run: .venv/bin/python -m bench.scale [--members 100000] [--posts 100000] [--comments 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pymongo import UpdateOne

from bench.stack import (
    TOKEN,
    emit,
    machine,
    percentile,
    rss_mib,
    running_stack,
    write_section,
)
from sarafan.nats_auth import ADMIN_USER
from sarafan.stack_config import StackDatabases
from sarafan.supervisor import nats_passwords
from shared.bus import STREAMS
from shared.events import (
    CommentAdded,
    Consent,
    Contacts,
    MemberJoined,
    PostCreated,
    new_event,
    utcnow,
)
from shared.query import order_key
from shared.store import epoch_ms

AUTH = {"Authorization": f"Bearer {TOKEN}"}
REGIONS = [f"region-{i:02d}" for i in range(40)]
INTERESTS = ["ecology", "animals", "elderly", "children", "culture", "sport", "education"]
READ_SAMPLES = 15
JOIN_SAMPLES = 15
MEMBER_CONSUMERS = (
    "engagement-members",
    "campaigns-members",
    "notifier-members",
    "activities-members",
)


def import_row(i: int, now: datetime, rnd: random.Random) -> dict[str, Any]:
    joined = now - timedelta(days=rnd.uniform(1, 365))
    return {
        "display_name": f"Volunteer {i}",
        "email": f"v{i}@bench.example.org",
        "region": REGIONS[i % len(REGIONS)],
        "roles": ["coordinator"] if i % 50 == 0 else ["volunteer"],
        "interests": rnd.sample(INTERESTS, 2),
        "locale": "ru" if i % 3 else "en",
        "consent_terms": True,
        "consent_marketing": True,
        "joined_at": joined.isoformat(),
        "consent_at": joined.isoformat(),
        "consent_source": "bench import",
    }


async def timed(call: Callable[[], Awaitable[httpx.Response]], samples: int) -> float:
    """Median milliseconds of `samples` calls after two warm-ups (each must answer 200)."""
    for _ in range(2):
        r = await call()
        assert r.status_code == 200, r.text
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        r = await call()
        times.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, r.text
    return round(statistics.median(times), 1)


async def join_to_welcome(members: httpx.AsyncClient, notifier: httpx.AsyncClient) -> list[float]:
    """Sequential joins, each timed until its welcome is in the inbox (ms)."""
    results = []
    for _ in range(JOIN_SAMPLES):
        body = {
            "display_name": "Bench",
            "email": f"j.{uuid.uuid4().hex}@example.org",
            "region": REGIONS[0],
            "consent": {"terms": True, "marketing": False},
        }
        started = time.perf_counter()
        r = await members.post("/v1/members", json=body)
        assert r.status_code == 201, r.text
        mid = r.json()["member_id"]
        while True:
            inbox = (await notifier.get(f"/v1/members/{mid}/inbox")).json()["items"]
            if inbox:
                break
            await asyncio.sleep(0.005)
        results.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.05)
    return results


async def reads(clients: dict[str, httpx.AsyncClient], member: str) -> dict[str, float]:
    m, e, n = clients["members"], clients["engagement"], clients["notifier"]
    return {
        "inbox": await timed(lambda: n.get(f"/v1/members/{member}/inbox?limit=20"), READ_SAMPLES),
        "engagement": await timed(lambda: e.get(f"/v1/members/{member}/engagement"), READ_SAMPLES),
        "stats": await timed(lambda: e.get("/v1/stats"), READ_SAMPLES),
        "leaderboard 30d": await timed(lambda: e.get("/v1/leaderboard?period=30d"), READ_SAMPLES),
        "leaderboard all, one region": await timed(
            lambda: e.get(f"/v1/leaderboard?period=all&region={REGIONS[3]}"), READ_SAMPLES
        ),
        "segment new-promising": await timed(
            lambda: e.get("/v1/segments/new-promising?limit=20"), READ_SAMPLES
        ),
        "segment drifting": await timed(
            lambda: e.get("/v1/segments/drifting?limit=20"), READ_SAMPLES
        ),
        "members of a region": await timed(
            lambda: m.get(f"/v1/members?region={REGIONS[5]}&limit=50"), READ_SAMPLES
        ),
        "members with a role": await timed(
            lambda: m.get("/v1/members?role=coordinator&limit=50"), READ_SAMPLES
        ),
    }


async def counters_folded(mongo: StackDatabases, timeout: float = 600.0) -> float:
    """Wait until engagement's periodic job has folded every counter delta into its checkpoint
    (shared/tally.py: a read sums the deltas of the last few minutes, so right after a burst
    /v1/stats costs the burst's deltas until the fold passes them); seconds waited."""
    tallies = mongo["sarafan_engagement"]["tallies"]
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        checkpoint = await tallies.find_one({"_id": "community:checkpoint"}) or {}
        newest = await tallies.find_one(
            {"tally": {"$eq": "community"}, "at_ms": {"$gt": 0}}, sort=[("at_ms", -1)]
        )
        if newest is None or int(checkpoint.get("through_ms") or 0) >= int(newest["at_ms"]):
            return time.perf_counter() - started
        await asyncio.sleep(2)
    raise TimeoutError("the counters were not folded in time")


async def consumers_caught_up(js: Any, stream: str, names: tuple[str, ...]) -> bool:
    for name in names:
        info = await js.consumer_info(stream, name)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def wait_absorbed(js: Any, stream: str, names: tuple[str, ...], timeout: float) -> float:
    """Seconds until every named consumer has nothing pending (polled every 0.2 s)."""
    started = time.perf_counter()
    while not await consumers_caught_up(js, stream, names):
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{names} still busy after {timeout:.0f} s")
        await asyncio.sleep(0.2)
    return time.perf_counter() - started


async def quiesce(js: Any) -> None:
    """Until nothing is in flight: every durable consumer of every stream caught up, and the
    streams the services publish to unchanged for two seconds (outboxes drained)."""
    still = 0
    last: dict[str, int] = {}
    while still < 10:
        busy = False
        sizes = {}
        for stream in ("MEMBERS", "ENGAGEMENT", "CAMPAIGNS", "NOTIFIER"):
            sizes[stream] = (await js.stream_info(stream)).state.messages
            for name in await js.consumers_info(stream):
                if name.num_pending or name.num_ack_pending:
                    busy = True
        still = 0 if busy or sizes != last else still + 1
        last = sizes
        await asyncio.sleep(0.2)


async def publish_all(js: Any, events: list[Any], stream: str, window: int = 500) -> None:
    for start in range(0, len(events), window):
        chunk = events[start : start + window]
        await asyncio.gather(
            *(
                js.publish(
                    e.nats_subject, e.to_json(), stream=stream, headers={"Nats-Msg-Id": e.id}
                )
                for e in chunk
            )
        )


async def import_members(
    members: httpx.AsyncClient, count: int, now: datetime, first_id: int = 0, welcome: bool = False
) -> float:
    rnd = random.Random(11 + first_id)
    rows = [import_row(first_id + i, now, rnd) for i in range(count)]
    started = time.perf_counter()
    per_request = 10_000
    for first in range(0, count, per_request):
        body = "\n".join(json.dumps(r) for r in rows[first : first + per_request]) + "\n"
        r = await members.post(
            "/v1/members/import",
            params={
                "welcome": "true" if welcome else "false",
                "first_row": first + 1,
                "file": f"bench-{first_id}",
            },
            content=body.encode(),
            headers={"Content-Type": "application/x-ndjson"},
            timeout=600,
        )
        assert r.status_code == 200, r.text[:500]
        report = r.json()
        assert report["rejected"] == 0, report["rejected_rows"][:3]
    return time.perf_counter() - started


async def raw_insert_baseline(mongo: StackDatabases, count: int) -> float:
    """insert_many of the same member documents (same indexes) into a scratch collection."""
    source = mongo["sarafan_members"]["members"]
    target = mongo["bench_raw"]["members"]
    await target.drop()
    for name, spec in (await source.index_information()).items():
        if name == "_id_":
            continue
        options = {
            k: v for k, v in spec.items() if k in ("unique", "sparse", "partialFilterExpression")
        }
        await target.create_index(spec["key"], name=name, **options)
    docs = [d async for d in source.find({}).limit(count)]
    started = time.perf_counter()
    for first in range(0, len(docs), 1000):
        await target.insert_many(docs[first : first + 1000], ordered=False)
    elapsed = time.perf_counter() - started
    await mongo.drop_database("bench_raw")
    return elapsed * count / max(len(docs), 1)


async def grow_activity(
    js: Any,
    mongo: StackDatabases,
    member_ids: list[str],
    posts: int,
    comments: int,
    now: datetime,
) -> float:
    """Posts and comments spread over six months: written as the API writes them, their
    events through JetStream; returns seconds until every consumer of them caught up."""
    rnd = random.Random(5)
    db = mongo["sarafan_engagement"]
    hub = member_ids[0]  # asks many questions: a member with a long inbox
    post_docs, post_events, question_ids = [], [], []
    for i in range(posts):
        author = hub if i % 20 == 0 else rnd.choice(member_ids)
        kind = "question" if i % 3 == 0 or author == hub else "post"
        created = now - timedelta(days=rnd.uniform(0, 180))
        pid = str(uuid.uuid4())
        doc = {"_id": pid, "author_id": author, "kind": kind, "title": f"Post {i}", "body": "",
               "tags": [], "region": None, "created_ms": epoch_ms(created)}  # fmt: skip
        if kind == "question":
            doc["open"] = 1
            question_ids.append((pid, author, created))
        post_docs.append(doc)
        post_events.append(new_event(PostCreated(post_id=pid, author_id=author, kind=kind,
                                                 title=f"Post {i}", created_at=created)))  # fmt: skip
    comment_docs, comment_events = [], []
    hub_questions = [q for q in question_ids if q[1] == hub]
    for i in range(comments):
        pid, asker, asked = rnd.choice(hub_questions if i % 10 == 0 else question_ids)
        author = rnd.choice(member_ids)
        created = min(asked + timedelta(hours=rnd.uniform(0.1, 72)), now)
        cid = str(uuid.uuid4())
        comment_docs.append({"_id": cid, "post_id": pid, "author_id": author, "post_author_id": asker,
                             "body": "An answer", "created_ms": epoch_ms(created),
                             "order_key": order_key(epoch_ms(created), cid)})  # fmt: skip
        comment_events.append(new_event(CommentAdded(comment_id=cid, post_id=pid, author_id=author,
                                                     post_author_id=asker, created_at=created)))  # fmt: skip
    for first in range(0, len(post_docs), 5000):
        await db.posts.insert_many(post_docs[first : first + 5000], ordered=False)
    for first in range(0, len(comment_docs), 5000):
        await db.comments.insert_many(comment_docs[first : first + 5000], ordered=False)
    started = time.perf_counter()
    await publish_all(js, post_events + comment_events, STREAMS["engagement"])
    await wait_absorbed(js, "ENGAGEMENT", ("engagement-activity", "campaigns-engagement",
                                           "notifier-engagement"), 3600)  # fmt: skip
    return time.perf_counter() - started


async def announce(campaigns: httpx.AsyncClient, js: Any, name: str, now: datetime) -> float:
    """A campaign for everyone started by hand: seconds until its fan-out is written."""
    campaign = await campaigns.post(
        "/v1/campaigns",
        json={
            "name": name, "kind": "challenge",
            "starts_at": (now - timedelta(minutes=1)).isoformat(),
            "ends_at": (now + timedelta(days=30)).isoformat(),
            "audience": {"regions": [], "roles": [], "min_level": None},
            "scoring": {"post-created": 2}, "milestones": [10], "winners": 3,
            "announcement": {"ru": name, "en": name},
        },
    )  # fmt: skip
    assert campaign.status_code == 201, campaign.text
    started = time.perf_counter()
    r = await campaigns.post(f"/v1/campaigns/{campaign.json()['campaign_id']}/start")
    assert r.status_code == 200, r.text
    await asyncio.sleep(1)
    await wait_absorbed(js, "CAMPAIGNS", ("notifier-campaigns",), 3600)
    return time.perf_counter() - started


async def import_alone(args: argparse.Namespace) -> tuple[float, float]:
    """The import's own cost: members alone on its stack (no consumer competes for the
    database), beside a raw insert_many of the same member documents, same server."""
    with running_stack(services=("members",)) as stack:
        cfg = stack.config
        async with httpx.AsyncClient(
            base_url=cfg.service_url("members"), headers=AUTH, timeout=600
        ) as members:
            seconds = await import_members(members, args.members, utcnow())
        mongo = StackDatabases(cfg, tz_aware=True)
        try:
            raw = await raw_insert_baseline(mongo, args.members)
        finally:
            await mongo.close()
    emit({"benchmark": "scale_import", "members": args.members, "seconds": round(seconds, 1),
          "raw_insert_many_seconds": round(raw, 1)})  # fmt: skip
    return seconds, raw


def member_joined(now: datetime) -> Any:
    mid = str(uuid.uuid4())
    return new_event(
        MemberJoined(
            member_id=mid, display_name="Newcomer", region=REGIONS[1], roles=["volunteer"],
            contacts=Contacts(email=f"{mid}@bench.example.org"),
            consent=Consent(terms=True, marketing=False), joined_at=now,
        )
    )  # fmt: skip


async def bare_pipeline(nc: Any, mongo: StackDatabases, subjects: list[str], count: int) -> float:
    """A durable pull consumer of the same member-joined events: fetch 100, one bulk write of
    upserts, ack each — what any consumer of these events must at least do."""
    js = nc.jetstream()
    name = "bench-bare"
    await js.add_consumer(
        "MEMBERS",
        ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT,
                       deliver_policy=DeliverPolicy.ALL, filter_subjects=subjects,
                       max_ack_pending=1000),
    )  # fmt: skip
    sub = await js.pull_subscribe_bind(durable=name, stream="MEMBERS")
    target = mongo["bench_bare"]["members"]
    done = 0
    started = time.perf_counter()
    while done < count:
        try:
            msgs = await sub.fetch(100, timeout=2)
        except nats.errors.TimeoutError:
            break
        ops = []
        for msg in msgs:
            event = json.loads(msg.data)
            data = event["data"]
            ops.append(UpdateOne({"_id": data["member_id"]},
                                 {"$set": {"display_name": data["display_name"],
                                           "region": data["region"]}}, upsert=True))  # fmt: skip
        await target.bulk_write(ops, ordered=False)
        for msg in msgs:
            await msg.ack()
        done += len(msgs)
    elapsed = time.perf_counter() - started
    await js.delete_consumer("MEMBERS", name)
    await mongo.drop_database("bench_bare")
    return done / elapsed


async def main_async(args: argparse.Namespace) -> None:
    args.started = time.perf_counter()
    args.import_s, args.raw_s = await import_alone(args)
    with running_stack() as stack:
        cfg = stack.config
        clients = {
            name: httpx.AsyncClient(base_url=cfg.service_url(name), headers=AUTH, timeout=120)
            for name in stack.services
        }
        password = nats_passwords(cfg.home)[ADMIN_USER]
        nc = await nats.connect(cfg.nats_url, user=ADMIN_USER, password=password)
        js = nc.jetstream(timeout=30)
        mongo = StackDatabases(cfg, tz_aware=True)
        try:
            await run(args, stack, clients, nc, js, mongo)
        finally:
            await mongo.close()
            await nc.close()
            for client in clients.values():
                await client.aclose()


async def run(args, stack, clients, nc, js, mongo) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    m_http, n_http = clients["members"], clients["notifier"]
    # A new, small community, so that every page read is a full page on both sides.
    await import_members(m_http, args.seed, now, first_id=10_000_000, welcome=True)
    seeded = [
        d["_id"]
        async for d in mongo["sarafan_members"]["members"].find({"status": {"$eq": "active"}})
    ]
    await grow_activity(js, mongo, seeded, args.seed, args.seed, now)
    await quiesce(js)
    fresh_joins = await join_to_welcome(m_http, n_http)
    probe = seeded[0]
    await quiesce(js)
    fresh_fold_wait_s = await counters_folded(mongo)
    fresh = await reads(clients, probe)
    emit({"benchmark": "scale_fresh", "reads_ms": fresh,
          "join_to_welcome_ms": {"p50": percentile(fresh_joins, 50), "p99": percentile(fresh_joins, 99)}})  # fmt: skip

    started = time.perf_counter()
    import_busy_s = await import_members(m_http, args.members, now)
    await wait_absorbed(js, "MEMBERS", MEMBER_CONSUMERS, 3600)
    import_absorbed_s = time.perf_counter() - started
    member_ids = [
        d["_id"]
        async for d in mongo["sarafan_members"]["members"].find(
            {"status": {"$eq": "active"}}, {"_id": 1}
        )
    ]
    member_ids = [m for m in member_ids if m not in set(seeded)]
    hub = member_ids[0]
    activity_s = await grow_activity(js, mongo, member_ids, args.posts, args.comments, now)
    fanouts = []
    for name in ("Spring cleanup", "Autumn tree planting"):  # one delivery per member each
        fanouts.append(await announce(clients["campaigns"], js, name, now))
    fanout_s = statistics.mean(fanouts)
    deliveries = await mongo["sarafan_notifier"]["deliveries"].estimated_document_count()

    joins = [member_joined(utcnow()) for _ in range(args.absorb)]
    started = time.perf_counter()
    await publish_all(js, joins, "MEMBERS")
    await wait_absorbed(js, "MEMBERS", MEMBER_CONSUMERS, 3600)
    sarafan_rate = args.absorb / (time.perf_counter() - started)
    bare_rate = await bare_pipeline(
        nc, mongo, ["members.member-joined.*"], args.members + args.absorb
    )

    await quiesce(js)
    grown_joins = await join_to_welcome(m_http, n_http)
    await quiesce(js)
    unfolded_stats = await timed(lambda: clients["engagement"].get("/v1/stats"), READ_SAMPLES)
    fold_wait_s = await counters_folded(mongo)
    grown = await reads(clients, hub)
    memory = {name: rss_mib(stack.children[name].pid) for name in stack.services}
    result = {
        "benchmark": "scale_grown", "members": args.members, "posts": args.posts,
        "comments": args.comments, "deliveries": deliveries, "reads_ms": grown,
        "join_to_welcome_ms": {"p50": percentile(grown_joins, 50), "p99": percentile(grown_joins, 99)},
        "import_s": round(args.import_s, 1), "raw_insert_s": round(args.raw_s, 1),
        "import_busy_s": round(import_busy_s, 1), "import_absorbed_s": round(import_absorbed_s, 1),
        "activity_absorb_s": round(activity_s, 1), "fanout_s": round(fanout_s, 1),
        "absorb_events_per_s": round(sarafan_rate, 1), "bare_events_per_s": round(bare_rate, 1),
        "rss_mib": memory, "stats_unfolded_ms": unfolded_stats, "fold_wait_s": round(fold_wait_s, 1),
        "fresh_fold_wait_s": round(fresh_fold_wait_s, 1),
        "total_min": round((time.perf_counter() - args.started) / 60, 1),
    }  # fmt: skip
    emit(result)
    write_results(args, fresh, grown, fresh_joins, grown_joins, result)


def write_results(args, fresh, grown, fresh_joins, grown_joins, r) -> None:  # type: ignore[no-untyped-def]
    rows = []
    for name in fresh:
        ratio = grown[name] / fresh[name] if fresh[name] else float("nan")
        capped = name.startswith(("stats", "leaderboard", "segment"))
        target = "≤ 1.5×, < 50 ms" if capped else "≤ 1.5×"
        ok = ratio <= 1.5 and (grown[name] < 50 or not capped)
        rows.append(
            f"| GET {name} (median of {READ_SAMPLES}) | {fresh[name]} ms | {grown[name]} ms | {ratio:.2f} | {target} {'✓' if ok else '✗'} |"
        )
    for q in (50, 99):
        a, b = percentile(fresh_joins, q), percentile(grown_joins, q)
        ok = b / a <= 1.5
        rows.append(
            f"| join → welcome in the inbox p{q} ({JOIN_SAMPLES} joins) | {a:.1f} ms | {b:.1f} ms | {b / a:.2f} | ≤ 1.5× {'✓' if ok else '✗'} |"
        )
    rows.append(
        f"| GET stats right after the growth, before the counters' fold passed it (median of {READ_SAMPLES}) | | {r['stats_unfolded_ms']} ms | | (the fold came {r['fold_wait_s']} s later) |"
    )
    import_ratio = r["raw_insert_s"] / r["import_s"]
    absorb_ratio = r["absorb_events_per_s"] / r["bare_events_per_s"]
    known = r["import_absorbed_s"]
    body = f"""Machine: {machine()}. Command: `.venv/bin/python -m bench.scale --members {args.members} --posts {args.posts} --comments {args.comments} --absorb {args.absorb} --seed {args.seed}`.
`sarafan up` on free ports. Fresh: a new community of {args.seed} members with as many posts
and comments (so that every page read is full), then {JOIN_SAMPLES} joins. Grown: {args.members:,} members imported
(JSON lines through `POST /v1/members/import`, no welcomes: the default), {args.posts:,} posts and
{args.comments:,} comments spread over six months (documents as the API writes them, events
through JetStream to the real consumers), two campaigns announced to every member:
{r["deliveries"]:,} deliveries in the notifier. The member whose inbox and engagement are read
after growing asked one question in twenty and got about {args.comments // 10:,} comment notices.

| figure | fresh | grown | ratio | target |
|---|---|---|---|---|
{chr(10).join(rows)}

| growth | Sarafan | baseline | ratio | target |
|---|---|---|---|---|
| import of {args.members:,} members, the members service alone | {r["import_s"]} s ({args.members / r["import_s"]:.0f}/s) | raw `insert_many` of the same documents: {r["raw_insert_s"]} s | {import_ratio:.2f} | |
| the same import on the whole stack, until every consumer absorbed it | {known} s (the import itself answered after {r["import_busy_s"]} s) | | | known everywhere < 180 s {"✓" if known < 180 else "✗"} |
| member-joined absorbed by every consumer ({args.absorb:,} published at once) | {r["absorb_events_per_s"]} events/s | bare batched pipeline (pull 100, one `bulk_write`, ack): {r["bare_events_per_s"]} events/s | {absorb_ratio:.2f} | ≥ 0.25× {"✓" if absorb_ratio >= 0.25 else "✗"} |
| {args.posts + args.comments:,} posts and comments absorbed by their consumers | {r["activity_absorb_s"]} s | | | |
| a campaign announced to every member (mean of two) | {r["fanout_s"]} s | | | |

The whole run took {r["total_min"]} minutes (target < 30), {r["fold_wait_s"] + r["fresh_fold_wait_s"]:.0f} s of it waiting for the counters' fold before the reads.

Resident memory (MiB) at {args.members:,} members: {", ".join(f"{n} {v}" for n, v in r["rss_mib"].items())} (target < 250 each: {"✓" if all(v < 250 for v in r["rss_mib"].values()) else "✗"}).
"""
    write_section(f"Scale: reads and joins on a fresh stack and at {args.members:,} members", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--comments", type=int, default=100_000)
    parser.add_argument("--absorb", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=500, help="the fresh community's size")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
