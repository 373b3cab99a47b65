"""The campaigns HTTP API: validation, lifecycle by hand, listing, errors."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.events import utcnow
from tests.integration.test_campaigns_support import (
    campaign_body,
    declare_streams,
)


async def test_create_rejects_an_invalid_campaign_with_clear_messages(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http = s["campaigns"].http
        now = utcnow()
        cases = {
            "ends_at must be after starts_at": campaign_body(
                starts_at=now.isoformat(), ends_at=(now - timedelta(hours=1)).isoformat()
            ),
            "unknown event types": campaign_body(scoring={"reaction-added": 1}),
            "strictly ascending": campaign_body(milestones=[50, 10]),
            "winners must be at least 1": campaign_body(winners=0),
            "announcement.en": campaign_body(announcement={"ru": "Привет"}),
            "kind": campaign_body(kind="lottery"),
        }
        for expected, body in cases.items():
            r = await http.post("/v1/campaigns", json=body)
            assert r.status_code == 422, (expected, r.text)
            assert expected in r.json()["error"]["message"], r.text


async def test_a_new_campaign_counting_referrals_at_the_sign_up_is_refused(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http = s["campaigns"].http
        r = await http.post("/v1/campaigns", json=campaign_body(count_referrals="joined"))
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_campaign"), r.text
        assert "'joined' is no longer accepted" in r.json()["error"]["message"]
        assert (await http.get("/v1/campaigns")).json()["items"] == []
        r = await http.post("/v1/campaigns", json=campaign_body())
        assert (r.status_code, r.json()["count_referrals"]) == (201, "active")


async def test_lifecycle_by_hand_and_listing_by_status(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http = s["campaigns"].http
        first = (await http.post("/v1/campaigns", json=campaign_body(name="one"))).json()
        second = (await http.post("/v1/campaigns", json=campaign_body(name="two"))).json()
        third = (await http.post("/v1/campaigns", json=campaign_body(name="three"))).json()
        assert {c["status"] for c in (first, second, third)} == {"scheduled"}

        started = await http.post(f"/v1/campaigns/{first['campaign_id']}/start")
        assert started.status_code == 200 and started.json()["status"] == "active"
        again = await http.post(f"/v1/campaigns/{first['campaign_id']}/start")
        assert again.status_code == 409 and again.json()["error"]["details"]["status"] == "active"
        ended = await http.post(f"/v1/campaigns/{first['campaign_id']}/end")
        assert ended.status_code == 200 and ended.json()["result"]["participants"] == 0
        assert (await http.post(f"/v1/campaigns/{first['campaign_id']}/cancel")).status_code == 409
        cancelled = await http.post(f"/v1/campaigns/{second['campaign_id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert (await http.post(f"/v1/campaigns/{third['campaign_id']}/end")).status_code == 409

        async def names(status: str) -> list[str]:
            r = await http.get("/v1/campaigns", params={"status": status})
            return [c["name"] for c in r.json()["items"]]

        assert await names("ended") == ["one"]
        assert await names("cancelled") == ["two"]
        assert await names("scheduled") == ["three"]
        page = (await http.get("/v1/campaigns", params={"limit": 2})).json()
        rest = (
            await http.get("/v1/campaigns", params={"limit": 2, "cursor": page["next_cursor"]})
        ).json()
        listed = page["items"] + rest["items"]
        assert sorted(c["name"] for c in listed) == ["one", "three", "two"]
        created = [datetime.fromisoformat(c["created_at"]) for c in listed]
        assert created == sorted(created, reverse=True)  # newest first
        assert rest["next_cursor"] is None
        assert (await http.get("/v1/campaigns", params={"status": "paused"})).status_code == 422

        for path in ("", "/leaderboard", "/report"):
            r = await http.get(f"/v1/campaigns/nope{path}")
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert (await http.post("/v1/campaigns/nope/start")).status_code == 404
        assert (await http.get("/v1/campaigns", headers={"Authorization": ""})).status_code == 401
