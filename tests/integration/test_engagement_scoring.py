"""Scores from consumed events: no double counting, bursts in batches, level-changed both ways."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.events import PostCreated, new_event, parse_event
from tests.helpers import wait_until
from tests.integration.test_engagement_support import (
    collect,
    engagement_of,
    join,
    publish,
    republish,
    wait_points,
)


def post_created(author: str, at: datetime | None = None, kind: str = "post") -> PostCreated:
    return PostCreated(
        post_id=str(uuid.uuid4()), author_id=author, kind=kind, title="t",
        created_at=at or datetime.now(UTC),
    )  # fmt: skip


async def test_a_redelivered_or_duplicated_event_does_not_double_the_score(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        # The activity consumer as the bus runs it (its batch path and its one-event path).
        [activity] = [c for c in s["engagement"].runtime.bus.consumers
                      if c.name == "engagement-activity"]  # fmt: skip
        author = await join(members, http)

        first = await publish(nc, post_created(author))
        await republish(nc, first, msg_id="another-copy")  # stored twice in the stream
        await wait_points(http, author, 6)

        # A crash after the score was written but before the ack: the handler runs again.
        envelope, data = parse_event(first.to_json())
        await activity.handle_batch([(envelope, data)])
        await activity.handle(envelope, data)
        # Part of a batch already applied, part new: only the new part counts.
        fresh = new_event(post_created(author))
        await activity.handle_batch([(envelope, data), parse_event(fresh.to_json())])

        got = await engagement_of(http, author)
        assert got["points_total"] == 1 + 5 + 5
        assert got["counts"]["posts"] == 2
        # The second stored copy was consumed too (the consumer's guard, not its
        # processed-ids record, made it a no-op: this consumer runs with dedupe off).
        js = nc.jetstream()

        async def both_copies_acked() -> bool:
            info = await js.consumer_info("ENGAGEMENT", "engagement-activity")
            return info.delivered.stream_seq >= 2 and info.num_ack_pending == 0

        await wait_until(both_copies_acked, message="the duplicate copy was never consumed")
        assert (await engagement_of(http, author))["points_total"] == 1 + 5 + 5


async def test_a_burst_of_events_is_consumed_in_batches_and_counted_once(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        authors = [await join(members, http) for _ in range(3)]
        for i in range(300):
            await publish(nc, post_created(authors[i % 3]))

        for author in authors:
            got = await wait_points(http, author, 1 + 100 * 5)
            assert got["points_total"] == 501 and got["counts"]["posts"] == 100
        assert (await engagement_of(http, authors[0]))["level"] == "ambassador"
        metrics = (await http.get("/metrics")).text
        assert 'outcome="ok",service="engagement",type="post-created"} 300.0' in metrics


async def test_level_changed_is_emitted_for_every_change_in_order(services, nc):
    async with (
        collect(nc, "engagement.level-changed.>") as seen,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        member = await join(members, http)
        for _ in range(5):
            r = await http.post("/v1/posts", json={"author_id": member, "title": "x"})
            assert r.status_code == 201
            await wait_points(http, member, 1 + 5 * (_ + 1))

        await wait_until(lambda: seen and seen[-1]["data"]["new_level"] == "active")
        chain = [(e["data"]["old_level"], e["data"]["new_level"]) for e in seen]
        assert chain == [("newcomer", "participant"), ("participant", "active")]
        assert seen[-1]["subject"] == member and seen[-1]["data"]["score"] >= 25
        assert (await engagement_of(http, member))["level"] == "active"


async def test_old_activity_counts_decayed(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        member = await join(members, http)
        month_ago = datetime.now(UTC) - timedelta(days=30)
        await publish(nc, post_created(member, at=month_ago, kind="question"))  # 3 points
        await publish(nc, post_created(member, at=month_ago))  # 5 points

        got = await wait_points(http, member, 9)
        assert got["points_total"] == 9
        assert abs(got["score"] - (1 + 8 / 2)) < 0.01  # one half-life later: halved
        assert got["streak_days"] == 0
