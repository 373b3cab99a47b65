"""Consumers believe a body only where it travelled, on a real nats-server: a forged, mislabelled
or unreadable event is dead-lettered alone and changes nothing; a fact dated ahead is read as
now."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import (
    CampaignStarted,
    LevelChanged,
    MemberJoined,
    MemberUpdated,
    PostCreated,
    new_event,
)
from tests.helpers import wait_until
from tests.integration.notifier_peers import create_streams, publish
from tests.integration.test_delivery_guarantees import stream_messages
from tests.integration.test_engagement_support import engagement_of, join, wait_points
from tests.integration.test_engagement_support import publish as publish_engagement


def joined(member_id: str, name: str) -> MemberJoined:
    return MemberJoined(
        member_id=member_id,
        display_name=name,
        region="moscow",
        roles=["volunteer"],
        contacts={"email": f"{member_id}@example.org"},
        consent={"terms": True, "marketing": True},
        joined_at=datetime.now(UTC),
    )


def campaign(campaign_id: str) -> CampaignStarted:
    now = datetime.now(UTC)
    return CampaignStarted(
        campaign_id=campaign_id,
        name="Clean-up",
        kind="challenge",
        audience={},
        starts_at=now,
        ends_at=now + timedelta(days=7),
        announcement={"ru": "Все на уборку!", "en": "Everyone to the clean-up!"},
    )


def envelope(data: Any, **changes: Any) -> dict[str, Any]:
    return {**json.loads(new_event(data).to_json()), **changes}


async def test_events_not_bound_to_their_subject_and_producer_change_nothing(services, nc):
    """With engagement's credentials a campaign-started on engagement.level-changed.x made the
    notifier announce to every consenting member; a member-updated on A's subject naming B
    renamed B. Each forged, mislabelled or unreadable message below is dead-lettered with its
    reason; the genuine events after them are handled, and nothing else changed."""
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    js = nc.jetstream()
    anna, boris = f"m_a{uuid.uuid4().hex[:6]}", f"m_b{uuid.uuid4().hex[:6]}"
    async with services("notifier") as s:
        http, store = s["notifier"].http, s["notifier"].store
        for member_id, name in ((anna, "Anna"), (boris, "Boris")):
            await publish(nc, joined(member_id, name))

        async def inbox(member_id: str) -> list[str]:
            items = (await http.get(f"/v1/members/{member_id}/inbox")).json()["items"]
            return [i["template"] for i in items]

        for member_id in (anna, boris):
            await wait_until(lambda m=member_id: inbox(m), message="no welcome")

        rename_boris = MemberUpdated(member_id=boris, changes={"display_name": "Mallory"})
        score = new_event(
            LevelChanged(member_id=anna, old_level="active", new_level="loyal", score=61.5)
        ).to_json()
        forged: dict[str, tuple[str, bytes]] = {
            "campaign-started on a level-changed subject": (
                "engagement.level-changed.c_forged",
                new_event(campaign("c_forged")).to_json(),
            ),
            "B's change on A's subject": (
                f"members.member-updated.{anna}",
                new_event(rename_boris).to_json(),
            ),
            "A's envelope naming B in its data": (
                f"members.member-updated.{anna}",
                json.dumps(envelope(rename_boris, subject=anna)).encode(),
            ),
            "another producer's source": (
                f"members.member-updated.{boris}",
                json.dumps(envelope(rename_boris, source="/services/engagement")).encode(),
            ),
            "dataschemaversion 0": (
                f"members.member-updated.{boris}",
                json.dumps(envelope(rename_boris, dataschemaversion=0)).encode(),
            ),
            "an infinite score": (
                f"engagement.level-changed.{anna}",
                score.replace(b"61.5", b"Infinity"),
            ),
            "nesting deep enough to break json": (
                f"members.member-updated.{boris}",
                b"[" * 50_000,
            ),
        }
        for subject, body in forged.values():
            stream = "ENGAGEMENT" if subject.startswith("engagement.") else "MEMBERS"
            await js.publish(subject, body, stream=stream)

        async def dead_letters() -> list[Any] | None:
            msgs = await stream_messages(js, "DLQ", "dlq.>")
            return msgs if len(msgs) >= len(forged) else None

        dead = await wait_until(dead_letters, message="the forged events were not dead-lettered")
        reasons = sorted(m.headers["Sarafan-Dlq-Error"] for m in dead)
        assert len(reasons) == len(forged), reasons
        for expected in (
            "type 'campaign-started' is not one this consumer handles",
            f"arrived on 'members.member-updated.{anna}'",
            f"data names member_id '{boris}', the envelope's subject is '{anna}'",
            "source '/services/engagement' is not /services/members",
            "dataschemaversion: Input should be greater than or equal to 1",
            "Infinity is not a number JSON allows",
            "nests deeper than",
        ):
            assert sum(expected in r for r in reasons) == 1, (expected, reasons)

        # Genuine events after the forged ones: handled, so the forged ones were not held back.
        await publish(nc, campaign("c_real"))
        await publish(nc, MemberUpdated(member_id=anna, changes={"display_name": "Anna K"}))

        async def anna_renamed_and_announced() -> bool:
            member = await store.member(anna)
            announced = "campaign_announcement" in await inbox(anna)
            return bool(member and member["display_name"] == "Anna K" and announced)

        await wait_until(anna_renamed_and_announced, message="the genuine events were not handled")
        assert (await store.member(boris))["display_name"] == "Boris"
        for member_id in (anna, boris):
            assert (await inbox(member_id)).count("campaign_announcement") == 1


async def test_a_post_dated_in_2100_is_scored_as_made_now(services, nc):
    """A fact dated 400 days ahead made its member an ambassador (2100 gives 10^268 points):
    read on engagement's clock, the post counts as made now."""
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        author = await join(members, http, display_name="Vera")
        post = PostCreated(
            post_id=f"p_{uuid.uuid4().hex[:8]}",
            author_id=author,
            kind="post",
            title="From the future",
            created_at=datetime(2100, 1, 1, tzinfo=UTC),
        )
        before = datetime.now(UTC)
        await publish_engagement(nc, post)
        await wait_points(http, author, 6)  # joined 1 + post 5
        got = await engagement_of(http, author)
        assert got["level"] != "ambassador"
        # 5 points a few minutes ahead at most, plus the join: barely above 6 after no decay.
        assert 5.9 < got["score"] < 6.01, got
        assert datetime.fromisoformat(got["last_active_at"]) <= before + timedelta(minutes=6)
