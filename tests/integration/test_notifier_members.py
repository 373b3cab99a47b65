"""The notifier's member projection at scale: joins welcomed in bulk, coordinators and audiences
found through indexed fields, projections and deliveries of an earlier version completed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifier.delivery_store import DeliveriesRepository
from shared.events import CampaignStarted, LevelChanged, MemberUpdated, QuestionUnanswered
from tests.helpers import wait_until
from tests.integration.notifier_peers import create_streams, publish
from tests.integration.test_notifier_flows import joined, log, templates_in_inbox, wait_for_member


async def idle(nc: Any, stream: str, consumer: str) -> bool:
    info = await nc.jetstream().consumer_info(stream, consumer)
    return info.num_pending == 0 and info.num_ack_pending == 0


@pytest.mark.timeout(120)
async def test_two_hundred_joins_at_once_are_welcomed_each_exactly_once_in_a_few_writes(
    services: Any, nc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    writes: list[int] = []
    insert_deliveries = DeliveriesRepository.insert

    def counted(self: DeliveriesRepository, docs: list[dict[str, Any]], *a: Any, **k: Any) -> Any:
        writes.append(len(docs))
        return insert_deliveries(self, docs, *a, **k)

    monkeypatch.setattr(DeliveriesRepository, "insert", counted)
    joins = [joined(display_name=f"Участник {n}") for n in range(200)]
    quiet = joined(display_name="Imported", imported=True, welcome=False)
    # All published before the notifier starts: it finds them waiting, as after an import.
    await asyncio.gather(*(publish(nc, j) for j in [*joins[:100], quiet, *joins[100:]]))
    js = nc.jetstream()

    async with services("notifier") as s:
        notifier = s["notifier"].http

        async def all_announced() -> bool:
            return (await js.stream_info("NOTIFIER")).state.messages == len(joins)

        await wait_until(all_announced, timeout=60, interval=0.2, message="200 notification-sent")
        await wait_until(lambda: idle(nc, "MEMBERS", "notifier-members"), timeout=30)

        welcomes = await log(notifier, channel="inapp")
        assert sorted(i["member_id"] for i in welcomes) == sorted(j.member_id for j in joins)
        assert {i["template"] for i in welcomes} == {"welcome"}
        # Batches of up to 100 events: a handful of inserts, never one per member.
        assert sum(writes) == len(joins) and len(writes) <= 6, writes

        await wait_for_member(notifier, quiet.member_id)  # projected all the same
        assert await log(notifier, member_id=quiet.member_id) == []
        assert (await js.stream_info("NOTIFIER")).state.messages == len(joins)


async def test_a_level_change_before_the_join_keeps_the_level_and_the_welcome(
    services: Any, nc: Any
) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    async with services("notifier") as s:
        notifier = s["notifier"].http
        member = joined()
        await publish(
            nc,
            LevelChanged(
                member_id=member.member_id, old_level="participant", new_level="active", score=40
            ),
        )
        await wait_until(lambda: idle(nc, "ENGAGEMENT", "notifier-engagement"))
        await publish(nc, member)

        async def welcomed() -> bool:
            return "welcome" in await templates_in_inbox(notifier, member.member_id)

        await wait_until(welcomed, message="the welcome after an early level-changed")
        doc = await s["notifier"].store.member(member.member_id)
        assert doc["status"] == "active" and doc["level"] == "active"


async def test_unanswered_questions_reach_the_coordinators_the_region_has_now(
    services: Any, nc: Any
) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    async with services("notifier") as s:
        notifier = s["notifier"].http
        asker = joined(region="tver")
        stays = joined(region="tver", roles=["coordinator"])
        promoted = joined(region="tver")
        moved = joined(region="tver", roles=["coordinator", "volunteer"])
        elsewhere = joined(region="kazan", roles=["coordinator"])
        for m in (asker, stays, promoted, moved, elsewhere):
            await publish(nc, m)
        for m in (asker, stays, promoted, moved, elsewhere):
            await wait_for_member(notifier, m.member_id)
        await publish(
            nc, MemberUpdated(member_id=promoted.member_id, changes={"roles": ["coordinator"]})
        )
        await publish(nc, MemberUpdated(member_id=moved.member_id, changes={"region": "kazan"}))
        await wait_until(lambda: idle(nc, "MEMBERS", "notifier-members"))
        await publish(
            nc,
            QuestionUnanswered(
                post_id="p1", asker_id=asker.member_id, region="tver", hours_open=30
            ),
        )

        async def told(member_id: str) -> bool:
            return "question_unanswered" in await templates_in_inbox(notifier, member_id)

        await wait_until(lambda: told(stays.member_id), message="the coordinator who stayed")
        await wait_until(lambda: told(promoted.member_id), message="the new coordinator")
        await wait_until(lambda: idle(nc, "ENGAGEMENT", "notifier-engagement"))
        for other in (asker, moved, elsewhere):
            assert not await told(other.member_id), other.member_id


async def test_campaign_audience_is_its_regions_roles_and_level_with_consent(
    services: Any, nc: Any
) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    async with services("notifier") as s:
        notifier = s["notifier"].http
        inside = [
            joined(region="tver", roles=["volunteer"]),
            joined(region="pskov", roles=["coordinator", "volunteer"]),
        ]
        outside = [
            joined(region="kazan", roles=["volunteer"]),  # another region
            joined(region="tver", roles=["staff"]),  # another role
            joined(region="tver", consent={"terms": True, "marketing": False}),
            joined(region="pskov", roles=["volunteer"]),  # below the level
        ]
        for m in [*inside, *outside]:
            await publish(nc, m)
        for m in [*inside, *outside]:
            await wait_for_member(notifier, m.member_id)
        for m in [*inside, outside[0], outside[1], outside[2]]:
            await publish(
                nc,
                LevelChanged(
                    member_id=m.member_id, old_level="newcomer", new_level="active", score=40
                ),
            )
        await wait_until(lambda: idle(nc, "ENGAGEMENT", "notifier-engagement"))
        now = datetime.now(UTC)
        event = await publish(
            nc,
            CampaignStarted(
                campaign_id="c_two",
                name="Two regions",
                kind="contest",
                audience={
                    "regions": ["tver", "pskov", "tver"],
                    "roles": ["volunteer"],
                    "min_level": "participant",
                },
                starts_at=now,
                ends_at=now + timedelta(days=1),
                announcement={"ru": "Конкурс", "en": "Contest"},
            ),
        )

        async def announced() -> list[str]:
            items = await log(notifier, channel="inapp", status="delivered")
            return sorted(i["member_id"] for i in items if i["cause_event_id"] == event.id)

        async def announced_as(expected: list[str]) -> list[str] | None:
            got = await announced()
            return got if got == expected else None

        await wait_until(lambda: idle(nc, "CAMPAIGNS", "notifier-campaigns"))
        # Read until the answer is the audience (a first read right after the consumer is
        # idle came back empty once, in a two-worker run of the whole suite on a loaded
        # machine); anyone outside the audience still fails it.
        expected = sorted(m.member_id for m in inside)
        assert await wait_until(
            lambda: announced_as(expected), message="the audience's announcements"
        ) == expected  # fmt: skip


async def test_what_an_earlier_version_stored_is_completed_at_start(services: Any, nc: Any) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    coordinator = joined(region="tver", roles=["coordinator"])
    asker = joined(region="tver")
    async with services("notifier") as s:
        notifier = s["notifier"].http
        for m in (coordinator, asker):
            await publish(nc, m)
            await wait_for_member(notifier, m.member_id)
        store = s["notifier"].store
        # As the previous version left them: no sort key, no coordinator_region.
        await store.deliveries.update_many({}, {"$unset": {"order_key": ""}})
        await store.members.update_many({}, {"$unset": {"coordinator_region": ""}})

    async with services("notifier") as s:
        notifier = s["notifier"].http
        for m in (coordinator, asker):
            assert await templates_in_inbox(notifier, m.member_id) == ["welcome"]
        page = (await notifier.get("/v1/notifications", params={"limit": 1})).json()
        rest = (
            await notifier.get("/v1/notifications", params={"cursor": page["next_cursor"]})
        ).json()
        assert len(page["items"]) == len(rest["items"]) == 1
        await publish(
            nc,
            QuestionUnanswered(
                post_id="p1", asker_id=asker.member_id, region="tver", hours_open=30
            ),
        )

        async def told() -> bool:
            return "question_unanswered" in await templates_in_inbox(
                notifier, coordinator.member_id
            )

        await wait_until(told, message="the coordinator projected by the earlier version")
