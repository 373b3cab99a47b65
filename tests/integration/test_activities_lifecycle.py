"""An activity's life over HTTP and events: validation, publishing a draft, changes with the new
values only, cancellation of every sign-up, the listing and its filters, who sees check-in
codes, check-in links."""

from __future__ import annotations

from datetime import timedelta

from shared import keys
from shared.events import utcnow
from tests.helpers import wait_until
from tests.integration.activities_support import (
    activity_body,
    create,
    events_of,
    join_members,
    shift,
    sign_up,
    wait_events,
)
from tests.integration.test_access_support import bearer


async def test_an_invalid_activity_is_a_422_naming_every_problem_and_nothing_is_stored(
    activities, nc
):
    http = activities.http
    soon = utcnow() + timedelta(days=1)
    cases = {
        "ends_at must be after starts_at": [shift(soon, hours=-1)],
        "at most 24 hours": [shift(soon, hours=25)],
        "already ended": [shift(utcnow() - timedelta(hours=5), hours=2)],
    }
    for expected, shifts in cases.items():
        r = await http.post("/v1/activities", json=activity_body(shifts=shifts))
        assert r.status_code == 422 and expected in r.json()["error"]["message"], r.text
    bad = {
        "timezone": activity_body(timezone="Mars/Olympus"),
        "shifts": activity_body(shifts=[]),
        "capacity": activity_body(shifts=[{**shift(soon), "capacity": 0}]),
        "capacity ": activity_body(shifts=[{**shift(soon), "capacity": "5"}]),
        "reminders_minutes": activity_body(reminders_minutes=[1, 2, 3, 4, 5, 6]),
        "title": activity_body(title="a\nb"),
        "status": activity_body(status="cancelled"),
        "announce": activity_body(announce="yes"),
        "extra": activity_body(extra=1),
    }
    for field, body in bad.items():
        r = await http.post("/v1/activities", json=body)
        assert r.status_code == 422, (field, r.text)
        assert field.strip() in r.text, (field, r.text)
    too_many = activity_body(shifts=[shift(soon + timedelta(hours=i)) for i in range(101)])
    assert (await http.post("/v1/activities", json=too_many)).status_code == 422
    listed = (await http.get("/v1/activities")).json()
    assert listed["items"] == []
    assert await activities.store.shifts.count_documents({}) == 0
    assert await events_of(nc, "activity-published") == []


async def test_a_draft_is_published_by_patch_and_changes_carry_the_new_values_only(activities, nc):
    http = activities.http
    starts = utcnow() + timedelta(days=3)
    draft = await create(http, status="draft", shifts=[shift(starts), shift(starts, role="cook")])
    aid, (s1, s2) = draft["activity_id"], (s["shift_id"] for s in draft["shifts"])
    path = f"/v1/activities/{aid}"
    unchanged = await http.patch(path, json={"title": draft["title"]})
    assert unchanged.status_code == 200

    published = await http.patch(path, json={"status": "published", "title": "Planting day"})
    assert published.status_code == 200 and published.json()["status"] == "published"
    (event,) = await wait_events(nc, "activity-published", 1)
    assert event["data"]["title"] == "Planting day" and len(event["data"]["shifts"]) == 2
    assert event["subject"] == aid and event["data"]["announce"] is True
    moved = starts + timedelta(hours=1)
    r = await http.patch(
        path,
        json={"location": "south gate", "shifts": [{"shift_id": s2, "starts_at": moved.isoformat(),
              "ends_at": (moved + timedelta(hours=2)).isoformat()}]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    (changed,) = await wait_events(nc, "activity-changed", 1)
    changes = changed["data"]["changes"]
    assert set(changes) == {"location", "shifts"} and changes["location"] == "south gate"
    assert [s["shift_id"] for s in changes["shifts"]] == [s2]
    assert changes["shifts"][0]["starts_at"].startswith(moved.strftime("%Y-%m-%dT%H:%M"))
    assert (await http.patch(path, json={"status": "draft"})).status_code == 409
    assert (
        await http.patch(path, json={"shifts": [{"shift_id": "s_x", "capacity": 2}]})
    ).status_code == 404
    assert len(await events_of(nc, "activity-published")) == 1
    assert s1 != s2


async def test_cancelling_an_activity_cancels_every_sign_up_and_revokes_its_link(activities, nc):
    http = activities.http
    anna, boris, vera = await join_members(nc, http, 3)
    activity = await create(http, shifts=[shift(utcnow() + timedelta(days=1), capacity=2)])
    aid = activity["activity_id"]
    ids = [(await sign_up(http, activity, m)).json()["signup_id"] for m in (anna, boris, vera)]
    link = await http.post(f"/v1/activities/{aid}/checkin-link")
    assert link.status_code == 201 and link.headers["Cache-Control"] == "no-store"
    token = link.json()["url"].rsplit("/", 1)[1]
    links = activities.app.state.context.links
    assert (await links.resolve(token, utcnow()))["_id"] == aid

    r = await http.post(f"/v1/activities/{aid}/cancel", json={"reason": "storm warning"})

    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["cancel_reason"] == "storm warning"
    for signup_id in ids:
        assert (await http.get(f"/v1/signups/{signup_id}")).json()["status"] == "cancelled"
    changed = await wait_events(nc, "sign-up-changed", 3, reason="activity-cancelled")
    assert {e["data"]["member_id"] for e in changed} == {anna, boris, vera}
    (cancelled,) = await wait_events(nc, "activity-cancelled", 1)
    assert cancelled["data"] == {"activity_id": aid, "reason": "storm warning"}
    assert await links.resolve(token, utcnow()) is None
    again = await http.post(f"/v1/activities/{aid}/cancel", json={"reason": "again"})
    assert again.status_code == 200 and again.json()["cancel_reason"] == "storm warning"
    assert len(await events_of(nc, "activity-cancelled")) == 1
    assert (await http.patch(f"/v1/activities/{aid}", json={"title": "x"})).status_code == 409
    assert (await http.post(f"/v1/activities/{aid}/checkin-link")).status_code == 409


async def test_the_listing_filters_by_region_status_and_start_and_pages_by_cursor(activities):
    http = activities.http
    base = utcnow() + timedelta(days=1)
    made = []
    for i in range(5):
        region = "moscow" if i % 2 == 0 else "kazan"
        a = await create(http, region=region, shifts=[shift(base + timedelta(days=i))])
        made.append(a["activity_id"])
    await create(http, status="draft", shifts=[shift(base + timedelta(days=10))])

    everything, cursor = [], None
    while True:
        page = (
            await http.get(
                "/v1/activities", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
            )
        ).json()
        everything += [a["activity_id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert everything[:5] == made and len(everything) == 6
    moscow = (
        await http.get("/v1/activities", params={"region": "moscow", "status": "published"})
    ).json()
    assert [a["activity_id"] for a in moscow["items"]] == made[0::2]
    window = {
        "from": (base + timedelta(days=1)).isoformat(),
        "to": (base + timedelta(days=3)).isoformat(),
    }
    within = (await http.get("/v1/activities", params=window)).json()
    assert [a["activity_id"] for a in within["items"]] == made[1:3]
    assert (await http.get("/v1/activities", params={"cursor": "garbage!"})).status_code == 422
    assert (await http.get("/v1/activities", params={"status": "paused"})).status_code == 422


async def test_check_in_codes_are_shown_to_manage_and_checkin_keys_only(activities):
    http = activities.http
    activity = await create(http)
    js = activities.runtime.bus.js
    tokens = {}
    for name, scopes in (
        ("reader", ["activities:read"]),
        ("desk", ["activities:read", "activities:checkin"]),
    ):
        token, record = keys.new_key(name, scopes)
        await keys.put(js, record)
        tokens[name] = token
    await wait_until(lambda: len(activities.runtime.keys.records) >= 2, message="keys")
    path = f"/v1/activities/{activity['activity_id']}"
    as_reader = (await http.get(path, headers=bearer(tokens["reader"]))).json()
    as_desk = (await http.get(path, headers=bearer(tokens["desk"]))).json()
    assert as_reader["shifts"][0]["checkin_code"] is None
    assert as_desk["shifts"][0]["checkin_code"] == activity["shifts"][0]["checkin_code"]
    listed = (await http.get("/v1/activities", headers=bearer(tokens["reader"]))).json()
    assert listed["items"][0]["shifts"][0]["checkin_code"] is None
    refused = await http.post(
        "/v1/activities", json=activity_body(), headers=bearer(tokens["desk"])
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["missing_scope"] == "activities:manage"


async def test_a_check_in_link_lasts_until_the_activity_ends_and_can_be_revoked(activities):
    http = activities.http
    starts = utcnow() + timedelta(hours=2)
    activity = await create(http, shifts=[shift(starts, hours=3)])
    aid = activity["activity_id"]
    first = (await http.post(f"/v1/activities/{aid}/checkin-link")).json()
    second = (await http.post(f"/v1/activities/{aid}/checkin-link")).json()
    links = activities.app.state.context.links
    one, two = (x["url"].rsplit("/", 1)[1] for x in (first, second))
    assert second["expires_at"].startswith((starts + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M"))
    assert await links.resolve(one, utcnow()) is None  # a new link revokes the previous one
    assert (await links.resolve(two, utcnow()))["_id"] == aid
    assert await links.resolve(two, starts + timedelta(hours=3)) is None  # the activity ended
    stored = await activities.store.links.find_one({})
    assert two not in str(stored)  # kept only as its hash
    assert (await http.delete(f"/v1/activities/{aid}/checkin-link")).status_code == 204
    assert await links.resolve(two, utcnow()) is None
    assert (await http.delete("/v1/activities/a_nope/checkin-link")).status_code == 404
    draft = await create(http, status="draft")
    assert (
        await http.post(f"/v1/activities/{draft['activity_id']}/checkin-link")
    ).status_code == 409


async def test_asyncapi_documents_the_seven_events_it_publishes_and_what_it_reads(activities):
    doc = (await activities.http.get("/asyncapi")).json()
    channels = " ".join(doc["channels"])
    for event in ("activity-published", "activity-changed", "activity-cancelled", "signed-up",
                  "sign-up-changed", "attended", "no-show"):  # fmt: skip
        assert f"activities.{event}" in channels, event
    assert "members.member-left" in channels
