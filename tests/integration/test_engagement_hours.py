"""Volunteer hours: recorded pending, decided by a coordinator or staff member, scored."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from shared.events import MemberUpdated
from tests.helpers import wait_until
from tests.integration.test_engagement_support import (
    collect,
    engagement_of,
    join,
    publish,
    wait_points,
)

HOURS = {"hours": 3.5, "activity": "food bank", "date": "2026-11-20", "note": "sorting"}


async def test_a_coordinator_approves_hours_which_score_and_emit_hours_approved(services, nc):
    async with (
        collect(nc, "engagement.hours-approved.>") as seen,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        volunteer = await join(members, http)
        coordinator = await join(members, http, roles=["volunteer", "coordinator"])

        r = await http.post("/v1/hours", json={"member_id": volunteer, **HOURS})
        assert r.status_code == 201, r.text
        entry = r.json()
        assert (entry["status"], entry["hours"], entry["date"]) == ("pending", 3.5, "2026-11-20")

        r = await http.post(f"/v1/hours/{entry['entry_id']}/approve", json={"by": coordinator})
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["decided_by"]) == ("approved", coordinator)

        await wait_until(lambda: len(seen) == 1)
        assert seen[0]["subject"] == volunteer
        assert seen[0]["data"] == {
            "entry_id": entry["entry_id"], "member_id": volunteer, "hours": 3.5,
            "activity": "food bank", "date": "2026-11-20", "approved_by": coordinator,
        }  # fmt: skip
        got = await wait_points(http, volunteer, 1 + 7)  # joined + 3.5 h × 2
        assert got["hours_approved"] == 3.5 and got["points_total"] == 8

        listing = (await http.get(f"/v1/members/{volunteer}/hours")).json()
        assert [i["entry_id"] for i in listing["items"]] == [entry["entry_id"]]
        assert (listing["approved_hours"], listing["pending_hours"]) == (3.5, 0)


async def test_only_coordinators_and_staff_decide_and_never_on_their_own_hours(services, nc):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        volunteer = await join(members, http)
        partner = await join(members, http, roles=["partner"])
        staff = await join(members, http, roles=["staff"])
        entry = (await http.post("/v1/hours", json={"member_id": volunteer, **HOURS})).json()
        own = (await http.post("/v1/hours", json={"member_id": staff, **HOURS})).json()
        approve = f"/v1/hours/{entry['entry_id']}/approve"

        r = await http.post(approve, json={"by": partner})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
        r = await http.post(approve, json={"by": volunteer})
        assert r.status_code == 403
        r = await http.post(approve, json={"by": "nobody"})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_member")
        r = await http.post(f"/v1/hours/{own['entry_id']}/approve", json={"by": staff})
        assert r.status_code == 403
        assert (await http.post("/v1/hours/missing/approve", json={"by": staff})).status_code == 404

        # Roles come from the projection: promoted to coordinator, the partner may decide.
        await publish(nc, MemberUpdated(member_id=partner, changes={"roles": ["coordinator"]}))

        async def may_decide() -> bool:
            return (await http.post(approve, json={"by": partner})).status_code == 200

        await wait_until(may_decide, message="the role change never reached the projection")
        assert (await http.get(f"/v1/members/{volunteer}/hours")).json()["items"][0]["status"] == (
            "approved"
        )


async def test_rejected_hours_do_not_score_and_a_decision_is_final(services, nc):
    async with (
        collect(nc, "engagement.hours-approved.>") as seen,
        services("members", "engagement") as s,
    ):
        members, http = s["members"].http, s["engagement"].http
        volunteer = await join(members, http)
        staff = await join(members, http, roles=["staff"])
        entry = (await http.post("/v1/hours", json={"member_id": volunteer, **HOURS})).json()
        pending = (await http.post("/v1/hours", json={"member_id": volunteer, **HOURS})).json()

        reject = await http.post(
            f"/v1/hours/{entry['entry_id']}/reject", json={"by": staff, "reason": "duplicate"}
        )
        again = await http.post(f"/v1/hours/{entry['entry_id']}/reject", json={"by": staff})
        approve = await http.post(f"/v1/hours/{entry['entry_id']}/approve", json={"by": staff})
        assert (reject.status_code, reject.json()["reason"]) == (200, "duplicate")
        assert again.status_code == 200
        assert (approve.status_code, approve.json()["error"]["code"]) == (409, "already_decided")

        listing = (await http.get(f"/v1/members/{volunteer}/hours?status=rejected")).json()
        assert [i["entry_id"] for i in listing["items"]] == [entry["entry_id"]]
        assert (listing["approved_hours"], listing["pending_hours"]) == (0, 3.5)
        page = (await http.get(f"/v1/members/{volunteer}/hours?limit=1")).json()
        assert [i["entry_id"] for i in page["items"]] == [pending["entry_id"]]
        rest = (
            await http.get(f"/v1/members/{volunteer}/hours?cursor={page['next_cursor']}")
        ).json()
        assert [i["entry_id"] for i in rest["items"]] == [entry["entry_id"]]

        assert (await engagement_of(http, volunteer))["points_total"] == 1
        assert seen == []


async def test_hours_need_a_known_member_and_a_sensible_amount(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        volunteer = await join(members, http)
        r = await http.post("/v1/hours", json={"member_id": "nobody", **HOURS})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_member")
        for bad in ({"hours": 0}, {"hours": 25}, {"date": "2999-01-01"}, {"activity": ""}):
            r = await http.post("/v1/hours", json={"member_id": volunteer, **HOURS, **bad})
            assert r.status_code == 422, bad
        assert (await http.get("/v1/members/nobody/hours")).status_code == 404


async def test_hours_dated_next_year_are_refused_and_tomorrow_is_the_tolerance(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        volunteer = await join(members, http)
        today = datetime.now(UTC).date()
        ahead = {"next year": today + timedelta(days=366), "in 2099": date(2099, 12, 31)}
        for when, day in ahead.items():
            body = {"member_id": volunteer, **HOURS, "date": day.isoformat()}
            r = await http.post("/v1/hours", json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (422, "future_date"), when
        listed = (await http.get(f"/v1/members/{volunteer}/hours")).json()
        assert listed["items"] == [] and listed["pending_hours"] == 0
        # A member east of UTC may already live tomorrow: that much is tolerated.
        body = {"member_id": volunteer, **HOURS, "date": (today + timedelta(days=1)).isoformat()}
        assert (await http.post("/v1/hours", json=body)).status_code == 201
