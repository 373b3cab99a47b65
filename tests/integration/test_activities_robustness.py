"""What must hold when things go wrong: erasure of a member, redelivered member events, and a
process dying between the writes of a sign-up (the repair finishes it, once)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.events import MemberLeft, utcnow
from tests.helpers import wait_until
from tests.integration.activities_support import (
    create,
    events_of,
    join_members,
    leave,
    publish,
    shift,
    sign_up,
    stream_events,
    wait_events,
    wait_known,
)
from tests.integration.test_campaigns_support import member_joined


async def test_an_erased_member_keeps_no_personal_field_and_their_messages_are_purged(
    activities, nc
):
    http = activities.http
    anna, boris = await join_members(nc, http, 2)
    soon = utcnow() + timedelta(minutes=20)
    past = await create(http, shifts=[shift(soon, hours=1)])
    later = await create(http, shifts=[shift(utcnow() + timedelta(days=2), capacity=1)])
    await sign_up(http, past, anna)
    key = {"Idempotency-Key": "anna-later"}
    sid = later["shifts"][0]["shift_id"]
    r = await http.post(
        f"/v1/activities/{later['activity_id']}/shifts/{sid}/signups",
        json={"member_id": anna},
        headers=key,
    )
    assert r.status_code == 201 and r.json()["status"] == "confirmed"
    assert (await sign_up(http, later, boris)).json()["status"] == "waitlisted"
    path = f"/v1/activities/{past['activity_id']}/attendance"
    past_sid = past["shifts"][0]["shift_id"]
    activities.clock.at(soon + timedelta(minutes=30))
    for action in ("check-in", "check-out"):
        body = {"member_id": anna, "shift_id": past_sid, "action": action}
        assert (await http.post(path, json=body)).status_code == 200
    activities.clock.reset()
    await wait_events(nc, "attended", 1, member_id=anna)
    assert await stream_events(nc, f"activities.*.{anna}")

    await leave(nc, anna, erase=True)
    await wait_known(http, anna, known=False)

    async def forgotten() -> bool:
        return not await activities.store.signups.find_one({"member_id": anna})

    await wait_until(forgotten, message="anna's sign-ups still name her")
    # Her seat on the coming shift went to the waitlist, quietly for her.
    promoted = await wait_events(nc, "sign-up-changed", 1, member_id=boris, reason="promoted")
    assert promoted[0]["data"]["status"] == "confirmed"
    assert await stream_events(nc, f"activities.*.{anna}") == []
    # Her id stays only as the projection's tombstone (an id, no personal field).
    tombstone = await activities.store.member(anna)
    assert set(tombstone) == {"_id", "status", "left_at_ms"} and tombstone["status"] == "erased"
    for name in await activities.runtime.db.list_collection_names():
        everything = await activities.runtime.db[name].find({"_id": {"$ne": anna}}).to_list(None)
        assert anna not in str(everything), name
    # The counts stay: her attendance still counts in the shift's report.
    report = (await http.get(f"/v1/activities/{past['activity_id']}/report")).json()
    assert (report["attended"], report["first_time_attendees"]) == (1, 1)
    later_report = (await http.get(f"/v1/activities/{later['activity_id']}/report")).json()
    assert (later_report["confirmed"], later_report["waitlisted"]) == (1, 0)
    # A replayed join does not bring her back, and the repeat request is not replayed.
    await publish(nc, member_joined(anna), msg_id="replayed-join")
    await wait_events(nc, "sign-up-changed", 1, member_id=boris)
    again = await http.post(
        f"/v1/activities/{later['activity_id']}/shifts/{sid}/signups",
        json={"member_id": anna},
        headers=key,
    )
    assert again.status_code == 422 and "Idempotent-Replayed" not in again.headers
    assert (await activities.store.member(anna))["status"] == "erased"


async def test_a_redelivered_member_left_changes_nothing_twice(activities, nc):
    http = activities.http
    anna, boris = await join_members(nc, http, 2)
    activity = await create(http, shifts=[shift(utcnow() + timedelta(days=1), capacity=1)])
    await sign_up(http, activity, anna)
    await sign_up(http, activity, boris)
    left = MemberLeft(member_id=anna, erase=False, left_at=utcnow())

    event = await publish(nc, left)
    await wait_events(nc, "sign-up-changed", 1, member_id=boris, reason="promoted")
    # The same event again: past JetStream's de-duplication, and past the consumer's
    # processed-ids (handed to the use case directly): the effects hold by themselves.
    await publish(nc, left, event=event, msg_id="redelivered")
    await activities.app.state.context.members.apply([left], utcnow())

    assert (await activities.store.member(anna))["status"] == "left"
    assert len(await events_of(nc, "sign-up-changed", member_id=anna)) == 1
    assert len(await events_of(nc, "sign-up-changed", member_id=boris)) == 1
    shown = (await http.get(f"/v1/activities/{activity['activity_id']}")).json()["shifts"][0]
    assert (shown["confirmed"], shown["waitlisted"]) == (1, 0)


@pytest.mark.parametrize("dies", ["after the claim", "before the claim"])
async def test_a_sign_up_whose_process_died_midway_is_finished_once_by_the_repair(
    activities, nc, dies
):
    http = activities.http
    anna, boris = await join_members(nc, http, 2)
    activity = await create(http, shifts=[shift(utcnow() + timedelta(days=1), capacity=1)])
    a = activities.app.state.context
    original = a.ledger.settle if dies == "after the claim" else a.ledger.claim

    async def dies_here(*args, **kwargs):
        raise RuntimeError("the process died here")

    if dies == "after the claim":
        a.ledger.settle = dies_here
    else:
        a.ledger.claim = dies_here
    with pytest.raises(RuntimeError):  # the in-process transport lets the crash through
        await sign_up(http, activity, anna)
    if dies == "after the claim":
        a.ledger.settle = original
    else:
        a.ledger.claim = original
    stored = await activities.store.signups.find_one({"member_id": anna})
    assert stored["status"] == "pending"
    # Boris meanwhile: the seat is anna's if her claim went through, else it is free.
    b = (await sign_up(http, activity, boris)).json()
    assert b["status"] == ("waitlisted" if dies == "after the claim" else "confirmed")

    jobs = activities.jobs
    assert await jobs.repair(utcnow()) == (1 if dies == "after the claim" else 0)  # too young
    await jobs.repair(utcnow() + timedelta(minutes=1))
    await jobs.repair(utcnow() + timedelta(minutes=2))

    after = (await http.get(f"/v1/signups/{stored['_id']}")).json()
    assert after["status"] == ("confirmed" if dies == "after the claim" else "waitlisted")
    signed = await wait_events(nc, "signed-up", 2)
    assert sorted(e["data"]["member_id"] for e in signed) == sorted([anna, boris])
    shown = (await http.get(f"/v1/activities/{activity['activity_id']}")).json()["shifts"][0]
    assert (shown["confirmed"], shown["waitlisted"]) == (1, 1)
    ledger = await activities.store.ledger(activity["shifts"][0]["shift_id"])
    assert ledger["unsettled"] == {} and ledger["unsettled_n"] == 0
    assert len(await events_of(nc, "signed-up", member_id=anna)) == 1
