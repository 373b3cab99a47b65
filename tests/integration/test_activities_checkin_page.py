"""The coordinator's check-in page over HTTP (no browser: tests/integration/
test_activities_checkin_browser.py drives it in Chromium): what it shows, that its forms record
through the API's use case as the link's coordinator, what a dead link or a cross-site form
gets, its headers, its rate, and that no token reaches a log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx

from services.activities.page_render import CSP
from shared.events import utcnow
from shared.http import WriteLimits
from tests.helpers import wait_until
from tests.integration.activities_support import create, shift, sign_up, wait_events
from tests.integration.conftest import Running
from tests.integration.test_campaigns_support import member_joined, publish

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def join(nc, http: httpx.AsyncClient, *names: str) -> list[str]:
    """Members with these display names, once the activities service knows them."""
    ids = []
    for n, name in enumerate(names):
        member_id = f"m_{utcnow():%H%M%S%f}{n}"
        await publish(nc, member_joined(member_id, display_name=name))
        ids.append(member_id)
    for member_id in ids:

        async def known(m: str = member_id) -> bool:
            return (await http.get(f"/v1/members/{m}/activities")).status_code == 200

        await wait_until(known, timeout=20, message=f"{member_id} never known")
    return ids


def at(running: Running, moment: datetime) -> None:
    running.clock.at(moment)


@asynccontextmanager
async def phone(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    """A client without any API key: the link is the only credential."""
    transport = httpx.ASGITransport(app=running.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        yield client


async def day_with_link(running: Running, nc, *names: str, recorded_by: str | None = None):
    """An activity whose one shift starts in an hour (the clock moved to 10 minutes after its
    start), the named members signed up, and a check-in link's path."""
    http = running.http
    members = await join(nc, http, *names)
    starts = utcnow() + timedelta(hours=1)
    activity = await create(http, shifts=[shift(starts, hours=3, capacity=10)])
    for member_id in members:
        assert (await sign_up(http, activity, member_id)).status_code == 201
    body = {"recorded_by": recorded_by} if recorded_by else None
    made = await http.post(f"/v1/activities/{activity['activity_id']}/checkin-link", json=body)
    assert made.status_code == 201, made.text
    at(running, starts + timedelta(minutes=10))
    return activity, members, urlsplit(made.json()["url"]).path, starts


async def attendance_of(http: httpx.AsyncClient, activity: dict, member_id: str) -> dict | None:
    sid = activity["shifts"][0]["shift_id"]
    listed = await http.get(f"/v1/activities/{activity['activity_id']}/shifts/{sid}/signups")
    for item in listed.json()["items"]:
        if item["member_id"] == member_id:
            return item
    return None


async def test_the_page_lists_the_shift_and_its_forms_record_as_the_api_does_then_redirect_back(
    activities, nc
):
    http = activities.http
    activity, (anna, _), path, _ = await day_with_link(
        activities, nc, "Anna", "Boris", recorded_by="m_olga"
    )
    sid = activity["shifts"][0]["shift_id"]
    code = activity["shifts"][0]["checkin_code"]
    async with phone(activities) as client:
        page = await client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for name, value in {
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Robots-Tag": "noindex, nofollow",
            "Content-Security-Policy": CSP,
        }.items():
            assert page.headers[name] == value
        assert "Anna" in page.text and "Boris" in page.text and code in page.text
        assert "<svg" in page.text and "signed up" in page.text
        # A GET changes nothing, whatever it carries.
        await client.get(f"{path}?action=check-in&member_id={anna}&shift_id={sid}")
        assert (await attendance_of(http, activity, anna))["attendance"] is None

        arrived = await client.post(
            path, data={"shift_id": sid, "member_id": anna, "action": "check-in"}, headers=FORM
        )
        assert arrived.status_code == 303
        location = arrived.headers["location"]
        assert location == f"?shift={sid}&said=arrived&m={anna}#r-{anna}"
        back = await client.get(f"{path}{location.split('#')[0]}")
        assert "Anna: arrived." in back.text

    # The API sees it: the same use case, recorded by the link's coordinator.
    item = await attendance_of(http, activity, anna)
    assert item["attendance"]["state"] == "present"
    assert item["attendance"]["recorded_by"] == "m_olga"
    read = (await http.get(f"/v1/activities/{activity['activity_id']}")).json()
    assert read["shifts"][0]["attended"] == 1

    async with phone(activities) as client:
        left = await client.post(
            path, data={"shift_id": sid, "member_id": anna, "action": "check-out"}, headers=FORM
        )
        assert "said=left" in left.headers["location"]
        again = await client.post(
            path, data={"shift_id": sid, "member_id": anna, "action": "check-out"}, headers=FORM
        )
        assert parse_qs(urlsplit(again.headers["location"]).query)["said"] == [
            "already_checked_out"
        ]
        shown = await client.get(f"{path}{again.headers['location'].split('#')[0]}")
        assert "Anna has left already" in shown.text
    (attended,) = await wait_events(nc, "attended", 1, member_id=anna)
    assert attended["data"]["recorded_by"] == "m_olga" and attended["data"]["walk_in"] is False


async def test_walk_ins_no_shows_and_bad_input_through_the_forms(activities, nc):
    http = activities.http
    activity, (anna,), path, _ = await day_with_link(activities, nc, "Anna")
    (gleb,) = await join(nc, http, "Gleb")
    sid = activity["shifts"][0]["shift_id"]
    async with phone(activities) as client:

        async def post(**form: str) -> str:
            r = await client.post(path, data=form, headers=FORM)
            assert r.status_code == 303, r.text
            return parse_qs(urlsplit(r.headers["location"]).query)["said"][0]

        assert await post(shift_id=sid, member_id=f" {gleb} ", action="check-in") == "walk-in"
        assert await post(shift_id=sid, member_id=anna, action="no-show") == "no-show"
        assert await post(shift_id=sid, member_id=anna, action="check-in") == "marked_no_show"
        assert await post(shift_id=sid, member_id="m_nobody", action="check-in") == (
            "unknown_member"
        )
        assert await post(shift_id=sid, member_id="not an id", action="check-in") == (
            "invalid_member_id"
        )
        assert await post(shift_id=sid, member_id=anna, action="delete") == "invalid_form"
        assert await post(shift_id="s_other", member_id=anna, action="check-in") == "not_found"
        json_body = {"Content-Type": "application/json"}
        nothing = await client.post(path, content=b'{"shift_id": 1}', headers=json_body)
        assert "said=invalid_form" in nothing.headers["location"]
    walk_in = await attendance_of(http, activity, gleb)
    assert walk_in["status"] == "walk-in" and walk_in["attendance"]["walk_in"] is True
    assert walk_in["attendance"]["recorded_by"] == "key:bootstrap"  # who made the link
    assert (await attendance_of(http, activity, anna))["attendance"]["state"] == "no-show"
    assert await attendance_of(http, activity, "m_nobody") is None


async def test_a_revoked_or_expired_link_shows_a_refusal_and_records_nothing(activities, nc):
    http = activities.http
    activity, (anna,), path, starts = await day_with_link(activities, nc, "Anna")
    aid, sid = activity["activity_id"], activity["shifts"][0]["shift_id"]
    form = {"shift_id": sid, "member_id": anna, "action": "check-in"}
    async with phone(activities) as client:
        at(activities, starts + timedelta(hours=3))  # the activity ended: the link expired
        expired = await client.get(path)
        assert expired.status_code == 410 and "has expired" in expired.text
        assert (await client.post(path, data=form, headers=FORM)).status_code == 410
        assert expired.headers["Cache-Control"] == "no-store"

        at(activities, starts + timedelta(minutes=10))
        assert (await http.delete(f"/v1/activities/{aid}/checkin-link")).status_code == 204
        revoked = await client.get(path)
        assert revoked.status_code == 404 and "does not work" in revoked.text
        assert (await client.post(path, data=form, headers=FORM)).status_code == 404
        assert (await client.get("/checkin/" + "x" * 43)).status_code == 404
    assert (await attendance_of(http, activity, anna))["attendance"] is None


async def test_a_form_posted_from_another_site_is_refused(activities, nc):
    http = activities.http
    activity, (anna,), path, _ = await day_with_link(activities, nc, "Anna")
    form = {"shift_id": activity["shifts"][0]["shift_id"], "member_id": anna, "action": "check-in"}
    async with phone(activities) as client:
        for headers in (
            {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
            {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-site"},
            {"Origin": "https://evil.example"},  # a browser without fetch metadata
        ):
            r = await client.post(path, data=form, headers={**FORM, **headers})
            assert r.status_code == 403, headers
            assert "another site" in r.text
        assert (await attendance_of(http, activity, anna))["attendance"] is None
        # What a browser sends for the page's own form (no-referrer makes its Origin null).
        same = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
        assert (await client.post(path, data=form, headers={**FORM, **same})).status_code == 303
    assert (await attendance_of(http, activity, anna))["attendance"]["state"] == "present"


async def test_each_link_records_at_most_its_rate_of_actions(activities, nc):
    activity, (anna,), path, _ = await day_with_link(activities, nc, "Anna")
    activities.app.state.context.page_limits = WriteLimits(2)
    form = {"shift_id": activity["shifts"][0]["shift_id"], "member_id": anna, "action": "check-in"}
    async with phone(activities) as client:
        answers = [(await client.post(path, data=form, headers=FORM)) for _ in range(3)]
    assert [r.status_code for r in answers] == [303, 303, 429]
    assert int(answers[2].headers["Retry-After"]) >= 1


async def test_a_key_bound_to_a_member_makes_links_recorded_by_that_member_only(services):
    from tests.integration.conftest import join_body
    from tests.integration.test_bound_keys import _bound_key, _refused

    async with services("members", "activities") as s:
        http = s["activities"].http
        joined = await s["members"].http.post("/v1/members", json=join_body(display_name="Olga"))
        olga = joined.json()["member_id"]
        own = await _bound_key(s, olga, ["activities:checkin"])
        activity = await create(http, shifts=[shift(utcnow() + timedelta(hours=1))])
        path = f"/v1/activities/{activity['activity_id']}/checkin-link"
        _refused(await http.post(path, json={"recorded_by": "m_boris"}, headers=own), olga)
        assert (await http.post(path, headers=own)).status_code == 201
        link = await s["activities"].store.links.find_one({})
        assert link["recorded_by"] == olga


async def test_no_log_line_carries_the_token(activities, nc, caplog):
    activity, (anna,), path, _ = await day_with_link(activities, nc, "Anna")
    token = path.rsplit("/", 1)[1]
    form = {"shift_id": activity["shifts"][0]["shift_id"], "member_id": anna, "action": "check-in"}
    with caplog.at_level(logging.DEBUG):
        async with phone(activities) as client:
            await client.get(path)
            await client.post(path, data=form, headers=FORM)
            await client.post(path, data=form, headers={**FORM, "Origin": "https://x.example"})
            await client.get(f"{path}?shift=nope&said=%3Cscript%3E&m=%3Cb%3E")
    # The service's lines (httpx's are this test's own client, naming what it asked for).
    lines = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert lines, "the requests logged nothing at all: is logging captured?"
    assert not [line for line in lines if token in line]
