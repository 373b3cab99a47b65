"""The notifier's engagement and campaign consumers take a fetched batch at once: a burst of
comments, accepted answers and level changes (or of campaign events) is handled batch by batch,
and each member hears of each event exactly once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifier.delivery_store import DeliveriesRepository
from shared.events import (
    AnswerAccepted,
    CampaignEnded,
    CampaignStarted,
    CommentAdded,
    EventData,
    LevelChanged,
    MemberJoined,
    MilestoneReached,
    Winner,
)
from tests.helpers import MovableClock, wait_until
from tests.integration.notifier_peers import MailRecorder, create_streams, publish, smtp_server
from tests.integration.test_notifier_flows import inbox, joined, log, wait_for_member
from tests.integration.test_notifier_members import idle

#: The notifier's daily budget of pushed messages per member (its default).
BUDGET = 5


def burst(askers: list[str], commenters: list[str]) -> list[EventData]:
    """Ten comments on each asker's question, one accepted answer each, and level changes for
    five askers (the first twice, in order), shuffled so each asker's events span batches."""
    comments: list[EventData] = [
        CommentAdded(
            comment_id=f"c_{a}_{n}",
            post_id=f"p_{a}",
            author_id=commenters[n],
            post_author_id=a,
            created_at=datetime.now(UTC),
        )
        for a in askers
        for n in range(10)
    ]
    accepted: list[EventData] = [
        AnswerAccepted(
            post_id=f"p_{a}",
            comment_id=f"c_{a}_{k % 10}",
            asker_id=a,
            answerer_id=commenters[k % 10],
            seconds_to_answer=600,
        )
        for k, a in enumerate(askers)
    ]
    events = comments + accepted
    random.Random(11).shuffle(events)
    ups = [
        LevelChanged(member_id=a, old_level="newcomer", new_level="participant", score=10)
        for a in askers[:5]
    ]
    second = LevelChanged(
        member_id=askers[0], old_level="participant", new_level="active", score=40
    )
    # The first asker's two steps up, early and late in the burst (in that order).
    for k, up in enumerate(ups):
        events.insert(k * 60, up)
    events.insert(len(events) - 10, second)
    return events


@pytest.mark.timeout(180)
async def test_a_burst_of_comments_gives_each_asker_one_message_per_comment_and_nothing_twice(
    services: Any, nc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    # Noon in Moscow: every message of the burst falls on the same budget day.
    noon = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    clock = MovableClock()
    clock.at(noon)
    writes: list[int] = []
    insert_deliveries = DeliveriesRepository.insert

    def counted(self: DeliveriesRepository, docs: list[dict[str, Any]], *a: Any, **k: Any) -> Any:
        writes.append(len(docs))
        return insert_deliveries(self, docs, *a, **k)

    monkeypatch.setattr(DeliveriesRepository, "insert", counted)
    askers = [joined(display_name=f"Asker {n}", welcome=False) for n in range(30)]
    commenters = [joined(display_name=f"Commenter {n}", welcome=False) for n in range(10)]
    asker_ids = [m.member_id for m in askers]
    commenter_ids = [m.member_id for m in commenters]
    js = nc.jetstream()

    with smtp_server() as smtp:
        env = {"SMTP_URL": smtp.url, "SARAFAN_NOTIFIER_POLL_SECONDS": 0.1}  # type: ignore[attr-defined]
        async with services("notifier", clock=clock, **env) as s:
            for m in [*askers, *commenters]:
                await publish(nc, m)
            for m in [*askers, *commenters]:
                await wait_for_member(s["notifier"].http, m.member_id)

        # All published while the notifier is away: it finds them waiting, as after a busy
        # minute, and takes them a fetched batch at a time.
        datas = burst(asker_ids, commenter_ids)
        events = await asyncio.gather(*(publish(nc, d) for d in datas))
        async with services("notifier", clock=clock, **env) as s:
            await wait_until(
                lambda: idle(nc, "ENGAGEMENT", "notifier-engagement"), timeout=90, interval=0.2
            )
            # About four batches of up to 100 events: one insert each, never one per event.
            assert sum(writes) == 300 + 2 * 30 + 6 + 30 * BUDGET + 10 * 3, writes
            assert len(writes) <= 8, writes
            expected = await expect_each_once(s, nc, smtp, askers, commenters)

            # The same events again: under other JetStream ids (the consumer's de-duplication)
            # and handled again as if the process had died before recording them as processed.
            for event, data in zip(events[:100], datas[:100], strict=True):
                await publish(nc, data, event=event, msg_id=f"again-{event.id}")
            # The handler as the bus calls it: a batch, and one event at a time after a failure.
            [consumer] = [
                c for c in s["notifier"].runtime.bus.consumers if c.name == "notifier-engagement"
            ]
            pairs = list(zip(events, datas, strict=True))
            for first in range(0, len(pairs), 100):
                await consumer.handle_batch(pairs[first : first + 100])
            # One by one (the path a failed batch falls back to) writes the same deliveries.
            # (The last events: an old level-changed replayed alone would project its level.)
            for event, data in pairs[-40:]:
                await consumer.handle(event, data)
            await wait_until(lambda: idle(nc, "ENGAGEMENT", "notifier-engagement"), timeout=30)
            assert await expect_each_once(s, nc, smtp, askers, commenters) == expected
            assert (await js.stream_info("NOTIFIER")).state.messages == expected


async def expect_each_once(
    s: Any, nc: Any, smtp: MailRecorder, askers: list[MemberJoined], commenters: list[MemberJoined]
) -> int:
    """Checks every member's deliveries and e-mails; returns how many notification-sent (one
    per in-app delivery and one per e-mail sent) the NOTIFIER stream holds once all are out."""
    notifier, store = s["notifier"].http, s["notifier"].store
    inapp = 0
    for n, asker in enumerate(askers):
        items = await log(notifier, member_id=asker.member_id, channel="inapp")
        levels = {"level_up": 2} if n == 0 else {"level_up": 1} if n < 5 else {}
        assert Counter(i["template"] for i in items) == {
            "comment_added": 10,
            "answer_accepted": 1,
            **levels,
        }, asker.member_id
        assert len({i["cause_event_id"] for i in items}) == len(items)
        # Eleven or more messages to push, a budget of five a day: five are pushed.
        assert len(await log(notifier, member_id=asker.member_id, channel="email")) == BUDGET
        inapp += len(items)
    for commenter in commenters:
        items = await log(notifier, member_id=commenter.member_id, channel="inapp")
        assert Counter(i["template"] for i in items) == {"answer_thanks": 3}, commenter.member_id
        assert len(await log(notifier, member_id=commenter.member_id, channel="email")) == 3
        inapp += len(items)
    assert (await store.member(askers[0].member_id))["level"] == "active"  # the later step won
    assert (await store.member(askers[1].member_id))["level"] == "participant"

    pushed = len(askers) * BUDGET + len(commenters) * 3

    def mailed() -> bool:
        return sum(len(smtp.to(m.contacts.email or "")) for m in [*askers, *commenters]) == pushed

    await wait_until(mailed, timeout=60, message="every e-mail sent, each once")
    js = nc.jetstream()

    async def all_announced() -> bool:
        return (await js.stream_info("NOTIFIER")).state.messages == inapp + pushed

    await wait_until(all_announced, timeout=60, interval=0.2, message="every notification-sent")
    return inapp + pushed


async def test_campaign_events_in_one_batch_keep_their_order_and_reach_each_member_once(
    services: Any, nc: Any
) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    members = [joined(display_name=f"Member {n}", welcome=False) for n in range(20)]
    async with services("notifier") as s:
        for m in members:
            await publish(nc, m)
        for m in members:
            await wait_for_member(s["notifier"].http, m.member_id)

    now = datetime.now(UTC)
    # Published together while the notifier is away: one fetched batch. The milestones and the
    # winner come after the start, so they name the campaign the same batch remembered.
    start = CampaignStarted(
        campaign_id="c_burst",
        name="Весенний забег",
        kind="contest",
        audience={"regions": [], "roles": [], "min_level": None},
        starts_at=now,
        ends_at=now + timedelta(days=7),
        announcement={"ru": "Бежим!", "en": "Run!"},
    )
    milestones = [
        MilestoneReached(campaign_id="c_burst", member_id=m.member_id, milestone=10, points=12)
        for m in members
    ]
    ended = CampaignEnded(
        campaign_id="c_burst",
        participants=20,
        winners=[Winner(member_id=members[0].member_id, rank=1, points=12)],
    )
    for data in [start, *milestones, ended]:
        await publish(nc, data)
    async with services("notifier") as s:
        notifier = s["notifier"].http
        await wait_until(lambda: idle(nc, "CAMPAIGNS", "notifier-campaigns"), timeout=60)
        for n, m in enumerate(members):
            items = await inbox(notifier, m.member_id)
            kinds = Counter(i["template"] for i in items)
            winner = {"campaign_winner": 1} if n == 0 else {}
            assert kinds == {"campaign_announcement": 1, "milestone_reached": 1, **winner}
            reached = next(i for i in items if i["template"] == "milestone_reached")
            assert "«Весенний забег»" in reached["body"], reached["body"]
