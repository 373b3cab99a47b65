"""The notifier's HTTP API: preferences, the delivery log with its cursor, auth, metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.events import CampaignStarted, MemberUpdated
from shared.query import order_key
from shared.store import epoch_ms
from tests.helpers import wait_until
from tests.integration.notifier_peers import create_streams, publish
from tests.integration.test_notifier_flows import joined, log, templates_in_inbox, wait_for_member


async def test_preferences_are_read_replaced_and_validated(services: Any, nc: Any) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    async with services("notifier") as s:
        notifier = s["notifier"].http
        member = joined()
        await publish(nc, member)
        await wait_for_member(notifier, member.member_id)
        url = f"/v1/members/{member.member_id}/preferences"

        defaults = (await notifier.get(url)).json()
        assert defaults["channels"] == ["telegram", "email", "webhook"]
        assert defaults["quiet_hours"] is None and defaults["community"] == "instant"

        wanted = {
            "channels": ["email"],
            "categories": {"campaigns": False},
            "quiet_hours": {"start": "22:30", "end": "07:00"},
            "community": "digest",
            "digest_hour": 9,
            "rate_limit_per_hour": 3,
        }
        r = await notifier.put(url, json=wanted)
        assert r.status_code == 200, r.text
        got = (await notifier.get(url)).json()
        assert got["quiet_hours"] == {"start": "22:30:00", "end": "07:00:00"}
        assert {
            k: got[k]
            for k in ("channels", "categories", "community", "digest_hour", "rate_limit_per_hour")
        } == {
            k: wanted[k]
            for k in ("channels", "categories", "community", "digest_hour", "rate_limit_per_hour")
        }

        bad = await notifier.put(url, json={"categories": {"account": False}})
        assert bad.status_code == 422 and "account" in bad.json()["error"]["message"]
        assert (await notifier.put(url, json={"channels": ["sms"]})).status_code == 422
        assert (await notifier.get("/v1/members/nobody/preferences")).status_code == 404
        assert (await notifier.put("/v1/members/nobody/preferences", json={})).status_code == 404

        # The campaigns category is off: the announcement reaches this member nowhere.
        now = datetime.now(UTC)
        other = joined()
        await publish(nc, other)
        await wait_for_member(notifier, other.member_id)
        await publish(
            nc,
            CampaignStarted(
                campaign_id="c1",
                name="Promo",
                kind="promotion",
                audience={},
                starts_at=now,
                ends_at=now + timedelta(days=1),
                announcement={"ru": "Акция", "en": "Promo"},
            ),
        )

        async def other_has_it() -> bool:
            return "campaign_announcement" in await templates_in_inbox(notifier, other.member_id)

        await wait_until(other_has_it)
        assert await templates_in_inbox(notifier, member.member_id) == ["welcome"]

        # Withdrawn marketing consent (member-updated) stops announcements too.
        await publish(
            nc, MemberUpdated(member_id=other.member_id, changes={"consent": {"marketing": False}})
        )

        async def consent_gone() -> bool:
            doc = await s["notifier"].store.member(other.member_id)
            return not doc["consent"]["marketing"]

        await wait_until(consent_gone)
        await publish(
            nc,
            CampaignStarted(
                campaign_id="c2",
                name="Promo 2",
                kind="promotion",
                audience={},
                starts_at=now,
                ends_at=now + timedelta(days=1),
                announcement={"ru": "Акция", "en": "Promo"},
            ),
        )
        third = joined()
        await publish(nc, third)  # after c2 on another stream: wait for it, then look
        await wait_for_member(notifier, third.member_id)

        async def c2_handled() -> bool:
            info = await nc.jetstream().consumer_info("CAMPAIGNS", "notifier-campaigns")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_until(c2_handled)
        assert (await templates_in_inbox(notifier, other.member_id)).count(
            "campaign_announcement"
        ) == 1


async def test_delivery_log_filters_and_pages_through_a_fan_out(services: Any, nc: Any) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    async with services("notifier") as s:
        notifier = s["notifier"].http
        members = [joined(region="tver") for _ in range(5)]
        for m in members:
            await publish(nc, m)
        for m in members:
            await wait_for_member(notifier, m.member_id)
        now = datetime.now(UTC)
        event = await publish(
            nc,
            CampaignStarted(
                campaign_id="c1",
                name="Tver",
                kind="contest",
                audience={"regions": ["tver"]},
                starts_at=now,
                ends_at=now + timedelta(days=1),
                announcement={"ru": "Конкурс", "en": "Contest"},
            ),
        )

        async def fanned_out() -> bool:
            items = await log(notifier, status="delivered", channel="inapp")
            return sum(i["cause_event_id"] == event.id for i in items) == 5

        await wait_until(fanned_out)

        seen: list[str] = []
        cursor = None
        while True:  # five deliveries share one created_at: the cursor still walks them all
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await notifier.get("/v1/notifications", params=params)).json()
            seen += [i["notification_id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(set(seen)) == 10  # five welcomes, five announcements
        one = await log(notifier, member_id=members[0].member_id)
        assert sorted(i["template"] for i in one) == ["campaign_announcement", "welcome"]
        assert all(i["status"] == "delivered" and i["attempts"] == 0 for i in one)
        assert await log(notifier, status="failed") == []
        bad = await notifier.get("/v1/notifications", params={"cursor": "nonsense"})
        assert bad.status_code == 422

        metrics = (await notifier.get("/metrics")).text
        assert (
            'sarafan_notifications_total{channel="inapp",outcome="sent",service="notifier"} 10.0'
            in metrics
        )


async def test_every_route_needs_the_token(services: Any, nc: Any) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    async with services("notifier") as s:
        transport = httpx.ASGITransport(app=s["notifier"].app)
        async with httpx.AsyncClient(transport=transport, base_url="http://n") as anonymous:
            for path in ("/v1/notifications", "/v1/members/m1/inbox", "/v1/members/m1/preferences"):
                assert (await anonymous.get(path)).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert (await anonymous.get("/v1/notifications", headers=wrong)).status_code == 403
            assert (await anonymous.get("/readyz")).status_code == 200


BAD_PREFERENCES: list[Any] = [
    {"digest_hour": True},  # a boolean is not 1 o'clock
    {"digest_hour": "18"},
    {"digest_hour": 9.5},
    {"rate_limit_per_hour": 1e30},
    {"rate_limit_per_hour": True},
    {"categories": {"campaigns": "false"}},  # "false" is not false
    {"categories": {"x" * 10_000: True}},
    {"categories": {f"c{n}": True for n in range(1000)}},
    {"channels": ["email"] * 10_000},
    {"community": "x" * 100_000},
    {"quiet_hours": {"start": 3600, "end": "08:00"}},  # seconds after midnight UTC: no
    {"quiet_hours": {"start": "2" * 100_000, "end": "08:00"}},
    {"quiet_hours": {"start": "22:00"}},
    {"quiet_hours": {"start": "22:00", "end": "08:00", "zone": "UTC"}},
    {"colour": "blue"},
    ["not", "an", "object"],
]


async def test_preferences_out_of_bounds_coerced_or_malformed_are_422_and_store_nothing(
    services: Any, nc: Any
) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    async with services("notifier") as s:
        notifier = s["notifier"].http
        member = joined()
        await publish(nc, member)
        await wait_for_member(notifier, member.member_id)
        url = f"/v1/members/{member.member_id}/preferences"
        before = (await notifier.get(url)).json()
        for body in BAD_PREFERENCES:
            r = await notifier.put(url, json=body)
            assert r.status_code == 422, (body, r.text[:300])
            assert r.json()["error"]["code"] == "invalid_request"
            assert len(r.content) < 10_000  # the input is not echoed back
        for raw in (b'{"rate_limit_per_hour": NaN}', b'{"digest_hour": Infinity}'):
            r = await notifier.put(url, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text
        assert (await notifier.get(url)).json() == before


async def test_inbox_and_log_parameters_out_of_bounds_are_422_in_the_error_shape(
    services: Any, nc: Any
) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    async with services("notifier") as s:
        notifier = s["notifier"].http
        for params in (
            {"member_id": "m" * 1000},
            {"member_id": "m 1\n"},
            {"cursor": "A" * 5000},
            {"cursor": "²:x"},
            {"cursor": "9" * 30},
            {"limit": 0},
            {"limit": 10**12},
            {"status": "lost"},
            {"channel": "sms"},
        ):
            r = await notifier.get("/v1/notifications", params=params)
            assert r.status_code == 422, (params, r.text[:300])
            assert set(r.json()["error"]) >= {"code", "message"}
        for path in (
            f"/v1/members/{'m' * 500}/inbox",
            "/v1/members/m%0A1/inbox",
            "/v1/members/m%E2%80%A81/preferences",
        ):
            r = await notifier.get(path)
            assert r.status_code == 422, (path, r.text[:300])
        r = await notifier.get("/v1/members/m1/inbox", params={"cursor": "9" * 5000})
        assert r.status_code == 422


async def test_a_stored_delivery_that_cannot_be_read_is_left_out_of_lists_and_counted(
    services: Any, nc: Any
) -> None:
    await create_streams(nc, "MEMBERS", "ENGAGEMENT", "CAMPAIGNS")
    async with services("notifier") as s:
        notifier = s["notifier"].http
        member = joined()
        await publish(nc, member)

        async def welcomed() -> bool:
            return await templates_in_inbox(notifier, member.member_id) == ["welcome"]

        await wait_until(welcomed)
        now = epoch_ms(datetime.now(UTC))
        common = {"member_id": member.member_id, "channel": "inapp", "created_ms": now}
        # Written by hand or by another version: no status or dates; a template that is gone.
        await s["notifier"].store.deliveries.insert_many(
            [
                {**common, "_id": "n_bare", "order_key": order_key(now + 1, "n_bare")},
                {
                    **common,
                    "_id": "n_gone",
                    "order_key": order_key(now + 2, "n_gone"),
                    "template": "retired_template",
                    "context": {},
                    "mentions": {},
                    "category": "account",
                    "status": "delivered",
                    "created_at": datetime.now(UTC),
                    "cause_event_id": "e_gone",
                    "cause_type": "x",
                    "attempts": 0,
                },
            ]
        )
        assert await templates_in_inbox(notifier, member.member_id) == ["welcome"]
        logged = await log(notifier, member_id=member.member_id)
        assert sorted(i["notification_id"] for i in logged if i["template"] != "welcome") == [
            "n_gone"  # the log does not render texts: only the bare one is unreadable there
        ]
        metrics = (await notifier.get("/metrics")).text
        assert (
            'sarafan_documents_skipped_total{collection="deliveries",service="notifier"} 3.0'
            in metrics
        )
