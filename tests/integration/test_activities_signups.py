"""Sign-ups against real NATS and MongoDB (nx-27017, or MongoDB with MONGODB_URL): capacity, the
waitlist and promotion, no overbooking under concurrency, repeats, refusals."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from shared.events import utcnow
from tests.helpers import wait_until
from tests.integration.activities_support import (
    create,
    events_of,
    join_members,
    leave,
    shift,
    sign_up,
    wait_events,
    wait_known,
)


def _moved(running, delta: timedelta) -> None:
    """The service's clock, moved (the use cases and jobs read it, nothing sleeps)."""
    running.clock.offset = delta


async def test_fifty_concurrent_sign_ups_for_ten_seats_confirm_exactly_ten(activities, nc):
    http = activities.http
    members = await join_members(nc, http, 50)
    activity = await create(http, shifts=[shift(utcnow() + timedelta(days=1), capacity=10)])

    answers = await asyncio.gather(*(sign_up(http, activity, m) for m in members))

    refused = [r.text for r in answers if r.status_code != 201]
    assert not refused, refused
    bodies = [r.json() for r in answers]
    confirmed = [b for b in bodies if b["status"] == "confirmed"]
    waitlisted = [b for b in bodies if b["status"] == "waitlisted"]
    assert len(confirmed) == 10 and len(waitlisted) == 40
    assert sorted(b["position"] for b in waitlisted) == list(range(1, 41))
    got = (await http.get(f"/v1/activities/{activity['activity_id']}")).json()["shifts"][0]
    assert (got["confirmed"], got["waitlisted"]) == (10, 40)
    # Everyone can read their sign-up back; the waitlist positions are distinct, 1..40.
    reads = await asyncio.gather(*(http.get(f"/v1/signups/{b['signup_id']}") for b in waitlisted))
    assert sorted(r.json()["position"] for r in reads) == list(range(1, 41))
    events = await wait_events(nc, "signed-up", 50)
    assert sum(1 for e in events if e["data"]["status"] == "confirmed") == 10
    ledger = await activities.store.ledger(activity["shifts"][0]["shift_id"])
    assert ledger["unsettled"] == {} and ledger["free"] == 0


async def test_a_cancel_promotes_the_first_waitlisted_with_sign_up_changed(activities, nc):
    http = activities.http
    anna, boris, vera, gleb = await join_members(nc, http, 4)
    activity = await create(http, shifts=[shift(utcnow() + timedelta(days=1), capacity=2)])
    a = (await sign_up(http, activity, anna)).json()
    (await sign_up(http, activity, boris)).json()
    v = (await sign_up(http, activity, vera)).json()
    g = (await sign_up(http, activity, gleb)).json()
    assert (a["status"], v["status"], v["position"], g["position"]) == (
        "confirmed", "waitlisted", 1, 2
    )  # fmt: skip

    cancelled = await http.delete(f"/v1/signups/{a['signup_id']}")

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["reason"] == "cancelled-by-member"
    assert (await http.get(f"/v1/signups/{v['signup_id']}")).json()["status"] == "confirmed"
    assert (await http.get(f"/v1/signups/{g['signup_id']}")).json()["position"] == 1
    promoted = await wait_events(nc, "sign-up-changed", 1, member_id=vera, reason="promoted")
    assert promoted[0]["data"]["status"] == "confirmed"
    assert promoted[0]["subject"] == vera
    await wait_events(nc, "sign-up-changed", 1, member_id=anna, reason="cancelled-by-member")
    again = await http.delete(f"/v1/signups/{a['signup_id']}")
    assert again.status_code == 200
    assert len(await events_of(nc, "sign-up-changed", member_id=anna)) == 1


async def test_capacity_growth_promotes_from_the_waitlist_and_a_cut_below_confirmed_is_409(
    activities, nc
):
    http = activities.http
    members = await join_members(nc, http, 4)
    activity = await create(http, shifts=[shift(utcnow() + timedelta(days=1), capacity=1)])
    sid = activity["shifts"][0]["shift_id"]
    for m in members:
        await sign_up(http, activity, m)
    path = f"/v1/activities/{activity['activity_id']}"

    grown = await http.patch(path, json={"shifts": [{"shift_id": sid, "capacity": 3}]})

    assert grown.status_code == 200, grown.text
    assert (grown.json()["shifts"][0]["confirmed"], grown.json()["shifts"][0]["waitlisted"]) == (
        3, 1
    )  # fmt: skip
    await wait_events(nc, "sign-up-changed", 2, reason="promoted")
    changed = await wait_events(nc, "activity-changed", 1)
    assert changed[0]["data"]["changes"]["shifts"][0]["capacity"] == 3
    cut = await http.patch(path, json={"shifts": [{"shift_id": sid, "capacity": 2}]})
    assert cut.status_code == 409, cut.text
    assert cut.json()["error"]["code"] == "capacity_below_confirmed"
    assert cut.json()["error"]["details"]["confirmed"] == 3
    after = (await http.get(path)).json()["shifts"][0]
    assert (after["capacity"], after["confirmed"]) == (3, 3)
    assert len(await events_of(nc, "activity-changed")) == 1


async def test_a_repeated_sign_up_answers_the_existing_one_with_200(activities, nc):
    http = activities.http
    (anna,) = await join_members(nc, http, 1)
    activity = await create(http)
    first = await sign_up(http, activity, anna)
    again = await sign_up(http, activity, anna)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["signup_id"] == first.json()["signup_id"]
    await wait_events(nc, "signed-up", 1)
    assert len(await events_of(nc, "signed-up")) == 1


async def test_refusals_are_clear_4xx_with_nothing_stored_and_no_event(activities, nc):
    http = activities.http
    anna, boris, vera, gleb = await join_members(nc, http, 4)
    starts = utcnow() + timedelta(days=1)
    activity = await create(http, shifts=[shift(starts), shift(starts + timedelta(hours=2))])
    draft = await create(http, status="draft")
    cancelled = await create(http)
    cancel = await http.post(
        f"/v1/activities/{cancelled['activity_id']}/cancel", json={"reason": "storm"}
    )
    assert cancel.status_code == 200
    await leave(nc, boris, erase=False)
    await leave(nc, vera, erase=True)
    await wait_known(http, vera, known=False)

    async def boris_left() -> bool:
        member = await activities.store.member(boris)
        return member["status"] == "left"

    await wait_until(boris_left, message="boris never left")
    assert (await sign_up(http, activity, anna, 0)).status_code == 201
    cases = {
        "unknown_member": await sign_up(http, activity, "m_nobody"),
        "member_left": await sign_up(http, activity, boris),
        "unknown_member ": await sign_up(http, activity, vera),
        "activity_not_published": await sign_up(http, draft, gleb),
        "activity_cancelled": await sign_up(http, cancelled, gleb),
        "overlapping_shift": await sign_up(http, activity, anna, 1),
    }
    _moved(activities, timedelta(days=2))  # the service's clock past the shifts' end
    cases["shift_ended"] = await sign_up(http, activity, gleb)
    _moved(activities, timedelta(0))
    for code, answer in cases.items():
        assert answer.status_code in (409, 422), (code, answer.text)
        assert answer.json()["error"]["code"] == code.strip(), (code, answer.text)
    assert (
        cases["overlapping_shift"].json()["error"]["details"]["shift_id"]
        == (activity["shifts"][0]["shift_id"])
    )
    unknown = {"activity_id": "a_nope", "shifts": [{"shift_id": "s_nope"}]}
    assert (await sign_up(http, unknown, anna)).status_code == 404
    for a in (activity, draft, cancelled):
        for s in a["shifts"]:
            path = f"/v1/activities/{a['activity_id']}/shifts/{s['shift_id']}/signups"
            listed = {i["member_id"] for i in (await http.get(path)).json()["items"]}
            assert listed <= {anna}, (a["activity_id"], listed)
    await wait_events(nc, "signed-up", 1)
    signed = await events_of(nc, "signed-up")
    assert [e["data"]["member_id"] for e in signed] == [anna]


async def test_a_key_bound_to_a_member_signs_up_confirms_and_reads_only_as_that_member(
    activities, nc
):
    from shared.keys import new_key, put
    from tests.integration.test_access_support import bearer, known_everywhere

    http = activities.http
    anna, boris = await join_members(nc, http, 2)
    activity = await create(http, shifts=[shift(utcnow() + timedelta(days=1), capacity=5)])
    shift_id = activity["shifts"][0]["shift_id"]
    token, record = new_key("anna's app", ["activities:signup", "activities:read"], member_id=anna)
    await put(nc.jetstream(), record)
    await known_everywhere({"activities": activities}, [record.id])
    own = bearer(token)
    path = f"/v1/activities/{activity['activity_id']}/shifts/{shift_id}/signups"

    as_boris = await http.post(path, json={"member_id": boris}, headers=own)
    assert as_boris.status_code == 403, as_boris.text
    assert as_boris.json()["error"]["details"]["bound_member_id"] == anna
    assert (await http.get(f"/v1/activities/{activity['activity_id']}")).json()["shifts"][0][
        "confirmed"
    ] == 0
    mine = await http.post(path, json={"member_id": anna}, headers=own)
    assert mine.status_code == 201, mine.text
    boris_signup = (await sign_up(http, activity, boris)).json()  # by an unbound key

    for refused in (
        await http.get(f"/v1/signups/{boris_signup['signup_id']}", headers=own),
        await http.post(f"/v1/signups/{boris_signup['signup_id']}/confirm", headers=own),
        await http.delete(f"/v1/signups/{boris_signup['signup_id']}", headers=own),
        await http.get(f"/v1/members/{boris}/activities", headers=own),
    ):
        assert refused.status_code == 403, refused.text
    assert (await http.get(f"/v1/signups/{boris_signup['signup_id']}")).json()["status"] == (
        "confirmed"
    )
    signup_id = mine.json()["signup_id"]
    assert (await http.get(f"/v1/signups/{signup_id}", headers=own)).status_code == 200
    confirmed = await http.post(f"/v1/signups/{signup_id}/confirm", headers=own)
    assert confirmed.status_code == 200, confirmed.text
    assert (await http.get(f"/v1/members/{anna}/activities", headers=own)).status_code == 200
