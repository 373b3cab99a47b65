"""The activities use cases on in-memory collections: the seat ledger and its settling at every
point a process may die, cancels and promotion, capacity cuts, attendance counted once,
closing a shift, erasure.

No servers: the real store over `tests.fakes.memory`, the service's unit of work with a relay
that records what it would publish (`tests.fakes.activities`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from services.activities import domain
from services.activities.domain import Conflict
from services.activities.store import ActivitiesUnitOfWork
from services.activities.usecases import Mark
from shared.events import MemberLeft
from tests.fakes.activities import ActivitiesWorld


class Died(Exception):
    """The process died here."""


def dies(obj: object, name: str) -> None:
    """Make `obj.name` raise once, as a process dying at that step would."""
    original = getattr(obj, name)

    async def once(*args, **kwargs):
        setattr(obj, name, original)
        raise Died(name)

    setattr(obj, name, once)


def staging_dies(
    world: ActivitiesWorld, method: str, after: int = 0
) -> Callable[[], ActivitiesUnitOfWork]:
    """A unit-of-work factory whose units raise when `method` stages a write, past the first
    `after` calls: a use case failing after it staged something, before its commit."""

    def make() -> ActivitiesUnitOfWork:
        uow = world.unit_of_work()
        original, calls = getattr(uow, method), []

        def stage(*args, **kwargs):
            calls.append(method)
            if len(calls) > after:
                raise Died(method)
            return original(*args, **kwargs)

        setattr(uow, method, stage)
        return uow

    return make


def counters(world: ActivitiesWorld, sid: str) -> tuple[int, int, int]:
    doc = world.ledger_doc(sid)
    assert len(doc["seats"]) == doc["confirmed"] and len(doc["queue"]) == doc["waitlisted"]
    assert doc["free"] == doc["capacity"] - doc["confirmed"]
    return doc["free"], doc["confirmed"], doc["waitlisted"]


async def test_seats_then_the_waitlist_in_order_with_one_event_each():
    w = ActivitiesWorld()
    activity = await w.activity((2,))
    sid = w.shift_ids(activity)[0]
    results = [await w.sign_up(activity, await w.member(f"m{i}")) for i in range(4)]
    assert [r.signup["status"] for r in results] == ["confirmed"] * 2 + ["waitlisted"] * 2
    assert [r.position for r in results[2:]] == [1, 2]
    assert counters(w, sid) == (0, 2, 2)
    events = w.published("signed-up")
    assert [e.data["status"] for e in events] == ["confirmed"] * 2 + ["waitlisted"] * 2
    assert events[3].data["position"] == 2 and events[3].subject == "m3"
    again = await w.sign_up(activity, "m0")
    assert not again.created and len(w.published("signed-up")) == 4


async def test_a_cancel_promotes_the_first_waitlisted_and_the_line_moves_up():
    w = ActivitiesWorld()
    activity = await w.activity((1,))
    first, second, third = [await w.sign_up(activity, await w.member(m)) for m in ("a", "b", "c")]
    after = await w.signups.cancel(first.signup, "cancelled-by-member", w.clock())
    assert after["status"] == "cancelled" and after["reason"] == "cancelled-by-member"
    assert w.signup_doc(second.signup["_id"])["status"] == "confirmed"
    assert (await w.signups.get(third.signup["_id"]))[1] == 1
    changed = [(e.data["member_id"], e.data["reason"]) for e in w.published("sign-up-changed")]
    assert changed == [("a", "cancelled-by-member"), ("b", "promoted")]


@pytest.mark.parametrize("step", ["_follow", "_clear"])
async def test_a_claim_whose_process_died_before_the_sign_up_followed_is_settled_once(step):
    w = ActivitiesWorld()
    activity = await w.activity((1,))
    sid = w.shift_ids(activity)[0]
    await w.member("a")
    dies(w.ledger, step)
    with pytest.raises(Died):
        await w.sign_up(activity, "a")
    assert w.ledger_doc(sid)["unsettled_n"] == 1 and counters(w, sid) == (0, 1, 0)
    # A twin repair, run twice: one event, the mark gone, the counters as they were.
    await w.ledger.settle_all(sid, w.clock(), None)
    await w.ledger.settle_all(sid, w.clock(), None)
    assert w.ledger_doc(sid)["unsettled"] == {} and w.ledger_doc(sid)["unsettled_n"] == 0
    [signup] = w.db["signups"].documents()
    assert signup["status"] == "confirmed" and counters(w, sid) == (0, 1, 0)
    assert len(w.published("signed-up")) == 1


async def test_a_late_claim_for_a_sign_up_that_moved_on_is_undone_in_the_ledger():
    """A sweeper read a pending sign-up; meanwhile it was claimed, settled and cancelled; the
    sweeper's claim (from its stale read) takes a seat nobody holds: settling undoes it."""
    w = ActivitiesWorld()
    activity = await w.activity((1,))
    sid = w.shift_ids(activity)[0]
    await w.member("a")
    await w.member("b")
    first = await w.sign_up(activity, "a")
    stale = {**first.signup, "status": "pending"}
    await w.signups.cancel(first.signup, "cancelled-by-member", w.clock())
    assert counters(w, sid) == (1, 0, 0)
    claimed = await w.ledger.claim(stale, w.clock())
    assert claimed.signup["status"] == "cancelled"
    assert counters(w, sid) == (1, 0, 0) and w.ledger_doc(sid)["unsettled"] == {}
    assert (await w.sign_up(activity, "b")).signup["status"] == "confirmed"
    assert len(w.published("signed-up")) == 2


async def test_a_cancel_whose_process_died_after_the_ledger_is_settled_with_its_promotion():
    w = ActivitiesWorld()
    activity = await w.activity((1,))
    sid = w.shift_ids(activity)[0]
    a = await w.sign_up(activity, await w.member("a"))
    b = await w.sign_up(activity, await w.member("b"))
    dies(w.ledger, "settle")
    with pytest.raises(Died):
        await w.signups.cancel(a.signup, "cancelled-by-member", w.clock())
    assert counters(w, sid) == (1, 0, 1)  # the seat is free in the ledger; a not yet told
    await w.ledger.settle_all(sid, w.clock(), None)
    assert w.signup_doc(a.signup["_id"])["status"] == "cancelled"
    assert w.signup_doc(b.signup["_id"])["status"] == "confirmed"
    assert counters(w, sid) == (0, 1, 0)
    reasons = sorted(e.data["reason"] for e in w.published("sign-up-changed"))
    assert reasons == ["cancelled-by-member", "promoted"]


async def test_a_capacity_cut_below_the_confirmed_is_refused_and_a_growth_promotes():
    w = ActivitiesWorld()
    activity = await w.activity((2,))
    sid = w.shift_ids(activity)[0]
    for m in ("a", "b", "c"):
        await w.sign_up(activity, await w.member(m))
    with pytest.raises(Conflict) as refused:
        await w.planning.change(activity["_id"], {}, [domain.ShiftChange(sid, capacity=1)], None,
                                w.clock())  # fmt: skip
    assert refused.value.code == "capacity_below_confirmed"
    assert counters(w, sid) == (0, 2, 1) and w.ledger_doc(sid)["capacity"] == 2
    assert w.published("activity-changed") == []
    await w.planning.change(activity["_id"], {}, [domain.ShiftChange(sid, capacity=4)], None,
                            w.clock())  # fmt: skip
    assert counters(w, sid) == (1, 3, 0)
    assert [e.data["reason"] for e in w.published("sign-up-changed")] == ["promoted"]
    assert w.published("activity-changed")[0].data["changes"]["shifts"][0]["capacity"] == 4


async def test_a_cut_reserved_by_a_patch_that_died_is_given_back_by_the_sync():
    w = ActivitiesWorld()
    activity = await w.activity((5,))
    sid = w.shift_ids(activity)[0]
    dies(w.planning, "_write_change")
    with pytest.raises(Died):
        await w.planning.change(activity["_id"], {}, [domain.ShiftChange(sid, capacity=2)], None,
                                w.clock())  # fmt: skip
    assert w.ledger_doc(sid)["capacity"] == 2  # reserved, while the definition says 5
    await w.planning.sync(activity["_id"], w.clock())
    assert w.ledger_doc(sid)["capacity"] == 5 and counters(w, sid) == (5, 0, 0)


async def test_attendance_counts_once_however_often_it_is_counted():
    w = ActivitiesWorld()
    activity = await w.activity((2,))
    sid = w.shift_ids(activity)[0]
    await w.sign_up(activity, await w.member("a"))
    w.clock.advance(timedelta(days=1, minutes=10))
    mark = Mark(sid, "a", "check-in", None, "m_coord", activity["_id"])
    await w.attendance.record(mark, w.clock())
    await w.attendance.record(mark, w.clock())  # a repeat changes nothing
    w.clock.advance(timedelta(hours=1))
    await w.attendance.record(Mark(sid, "a", "check-out", None, "m_coord"), w.clock())
    signup = await w.store.signup_of(sid, "a")
    for _ in range(2):
        await w.tally.count(signup, w.clock())
    doc = w.ledger_doc(sid)
    assert (doc["attended"], doc["first_timers"], doc["hours_cs"]) == (1, 1, 100)
    assert len(w.published("attended")) == 1
    with pytest.raises(Conflict):
        await w.attendance.record(Mark(sid, "a", "check-out", None, "m_coord"), w.clock())


async def test_closing_a_shift_twice_makes_each_no_show_once():
    w = ActivitiesWorld()
    activity = await w.activity((3,))
    sid = w.shift_ids(activity)[0]
    for m in ("a", "b"):
        await w.sign_up(activity, await w.member(m))
    w.clock.advance(timedelta(days=1, hours=3, minutes=59))
    assert await w.attendance.close_due(w.clock()) == 0  # within the grace
    w.clock.advance(timedelta(minutes=2))
    assert await w.attendance.close_due(w.clock()) == 1
    assert await w.attendance.close(sid, w.clock()) == 0
    assert sorted(e.data["member_id"] for e in w.published("no-show")) == ["a", "b"]
    assert w.ledger_doc(sid)["no_shows"] == 2 and "due_ms" not in w.ledger_doc(sid)


def count_writes(*collections: object) -> list[str]:
    """Record each write command sent to these collections (a bulk write is one)."""
    sent: list[str] = []
    for coll in collections:
        for name in ("insert_one", "update_one", "update_many", "bulk_write",
                     "find_one_and_update", "delete_one"):  # fmt: skip
            original = getattr(coll, name)

            async def counted(*args, _original=original, _name=name, **kwargs):
                sent.append(_name)
                return await _original(*args, **kwargs)

            setattr(coll, name, counted)
    return sent


async def test_closing_a_shift_marks_its_no_shows_in_bulk_not_one_member_at_a_time():
    w = ActivitiesWorld()
    activity = await w.activity((40,))
    sid = w.shift_ids(activity)[0]
    for i in range(40):
        await w.sign_up(activity, await w.member(f"m{i:02d}"))
    await w.attendance.record(
        Mark(sid, "m00", "check-in", None, "m_coord"), w.clock() + timedelta(days=1)
    )
    w.clock.advance(timedelta(days=1, hours=4, minutes=1))
    writes = count_writes(w.store.signups, w.store.shifts, w.store.members)
    w.relay.kicks.clear()
    assert await w.attendance.close_due(w.clock()) == 1
    no_shows = w.published("no-show")
    assert sorted(e.data["member_id"] for e in no_shows) == [f"m{i:02d}" for i in range(1, 40)]
    assert w.ledger_doc(sid)["no_shows"] == 39 and w.ledger_doc(sid)["attended"] == 1
    assert all("uncounted_ms" not in w.signup_doc(e.data["signup_id"]) for e in no_shows)
    # The 39 no-shows: one bulk write with their events, one of their figures, one clearing
    # what was counted (not three writes each); the one still present: its attended.
    assert len(writes) < 12, writes


async def test_an_erased_member_is_anonymised_purged_and_their_seat_given_back_quietly():
    w = ActivitiesWorld()
    activity = await w.activity((1,))
    sid = w.shift_ids(activity)[0]
    a = await w.sign_up(activity, await w.member("a"))
    await w.sign_up(activity, await w.member("b"))
    await w.members.apply([MemberLeft(member_id="a", erase=True, left_at=w.clock())], w.clock())
    doc = w.signup_doc(a.signup["_id"])
    assert doc["member_id"].startswith("erased-") and doc["status"] == "cancelled"
    assert ("ACTIVITIES", "activities.*.a") in w.purged
    assert [e.data["member_id"] for e in w.published("sign-up-changed")] == ["b"]
    assert counters(w, sid) == (0, 1, 0)
    # Again (a redelivery): nothing more.
    await w.members.apply([MemberLeft(member_id="a", erase=True, left_at=w.clock())], w.clock())
    assert len(w.published("sign-up-changed")) == 1


async def test_a_link_opens_its_activity_as_its_coordinator_until_it_is_revoked_or_expires():
    w = ActivitiesWorld()
    activity = await w.activity((2,))
    link = await w.links.create(activity["_id"], "m_olga", w.clock())
    token = link.url.rsplit("/", 1)[1]
    opened = await w.links.open(token, w.clock())
    assert opened.activity["_id"] == activity["_id"] and opened.recorded_by == "m_olga"
    assert opened.link_id and opened.link_id not in token and opened.refused is None
    ended = w.clock() + timedelta(days=1, hours=3)
    assert (await w.links.open(token, ended)).refused == "expired"
    assert (await w.links.open(token[:-1], w.clock())).refused == "unknown"
    await w.links.revoke(activity["_id"])
    assert (await w.links.open(token, w.clock())) == type(opened)(None, refused="unknown")


async def test_erasing_a_coordinator_erases_their_name_from_the_links_they_made():
    w = ActivitiesWorld()
    activity = await w.activity((2,))
    await w.links.create(activity["_id"], await w.member("olga"), w.clock())
    await w.members.apply([MemberLeft(member_id="olga", erase=True, left_at=w.clock())], w.clock())
    [link] = w.db["checkin_links"].documents()
    assert link["recorded_by"] == "erased"


async def test_a_cancel_that_fails_before_its_commit_writes_nothing_and_publishes_nothing():
    w = ActivitiesWorld()
    activity = await w.activity((1,))
    await w.links.create(activity["_id"], "m_olga", w.clock())
    a = await w.sign_up(activity, await w.member("a"))
    kicks = len(w.relay.kicks)
    # The activity's update is staged, then staging the link's delete fails: neither is made.
    w.planning.unit_of_work = staging_dies(w, "delete")
    with pytest.raises(Died):
        await w.planning.cancel(activity["_id"], "rain", w.clock())
    [doc] = w.db["activities"].documents()
    assert doc["status"] == "published" and doc["version"] == activity["version"]
    assert len(w.relay.kicks) == kicks and w.published("activity-cancelled") == []
    assert len(w.db["checkin_links"].documents()) == 1
    assert w.signup_doc(a.signup["_id"])["status"] == "confirmed"
    # The retry does it all, once.
    w.planning.unit_of_work = w.unit_of_work
    await w.planning.cancel(activity["_id"], "rain", w.clock())
    assert w.db["activities"].documents()[0]["status"] == "cancelled"
    assert len(w.published("activity-cancelled")) == 1
    assert w.db["checkin_links"].documents() == []
    assert w.signup_doc(a.signup["_id"])["status"] == "cancelled"


async def test_an_erasure_that_fails_while_anonymising_leaves_every_sign_up_for_its_retry():
    w = ActivitiesWorld()
    activity = await w.activity((2, 2))
    member = await w.member("a")
    ids = [(await w.sign_up(activity, member, n)).signup["_id"] for n in (0, 1)]
    left = MemberLeft(member_id="a", erase=True, left_at=w.clock())
    # The first sign-up's anonymising is staged, staging the second's fails: none is made.
    w.members.unit_of_work = staging_dies(w, "update", after=1)
    with pytest.raises(Died):
        await w.members.apply([left], w.clock())
    assert [w.signup_doc(i)["member_id"] for i in ids] == ["a", "a"]
    assert ("ACTIVITIES", "activities.*.a") in w.purged  # purged first, anonymised after
    w.members.unit_of_work = w.unit_of_work
    await w.members.apply([left], w.clock())  # the redelivery finds both
    assert all(w.signup_doc(i)["member_id"].startswith("erased-") for i in ids)
    assert [w.signup_doc(i)["status"] for i in ids] == ["cancelled", "cancelled"]


async def test_figures_that_fail_before_their_commit_move_no_counter_and_count_once_later():
    w = ActivitiesWorld()
    activity = await w.activity((2,))
    sid = w.shift_ids(activity)[0]
    await w.sign_up(activity, await w.member("a"))
    w.clock.advance(timedelta(days=1, minutes=10))
    mark = Mark(sid, "a", "check-in", None, "m_coord", activity["_id"])
    # The shift's counters are staged, staging the clearing of `uncounted_ms` fails: neither
    # is made (before the unit of work, the counters were written at once).
    w.tally.unit_of_work = staging_dies(w, "bulk", after=1)
    with pytest.raises(Died):
        await w.attendance.record(mark, w.clock())
    signup = await w.store.signup_of(sid, "a")
    assert signup is not None and signup["att"] == "present" and "uncounted_ms" in signup
    assert w.ledger_doc(sid)["attended"] == 0 and w.ledger_doc(sid)["counted"] == {}
    # The repair counts it (from the sign-up's state), once however often.
    w.tally.unit_of_work = w.unit_of_work
    for _ in range(2):
        await w.tally.count(signup, w.clock())
    doc = w.ledger_doc(sid)
    assert (doc["attended"], doc["first_timers"]) == (1, 1)
    assert "uncounted_ms" not in w.signup_doc(signup["_id"])


async def test_an_erasure_that_fails_before_its_commit_leaves_every_name_for_its_retry():
    w = ActivitiesWorld()
    activity = await w.activity((2,))
    member = await w.member("olga")
    signup = (await w.sign_up(activity, member)).signup
    await w.links.create(activity["_id"], member, w.clock())
    left = MemberLeft(member_id="olga", erase=True, left_at=w.clock())
    # Staged: the sign-up anonymised, the names in others' documents; staging the delete of
    # the Idempotency-Key records fails: nothing of it is made (not even the coordinator's
    # name on the link, which used to be erased at once).
    w.members.unit_of_work = staging_dies(w, "delete")
    with pytest.raises(Died):
        await w.members.apply([left], w.clock())
    assert w.signup_doc(signup["_id"])["member_id"] == "olga"
    assert [d["recorded_by"] for d in w.db["checkin_links"].documents()] == ["olga"]
    assert w.db["activities"].documents()[0]["organiser_id"] == "m_org"
    w.members.unit_of_work = w.unit_of_work
    await w.members.apply([left], w.clock())  # the redelivery erases it all
    assert w.signup_doc(signup["_id"])["member_id"].startswith("erased-")
    assert [d["recorded_by"] for d in w.db["checkin_links"].documents()] == ["erased"]


def record_writes(world: ActivitiesWorld) -> list[tuple[str, str]]:
    """Record (collection, command) of each write the database sees, in order."""
    sent: list[tuple[str, str]] = []
    for coll in (world.store.signups, world.store.shifts):
        for name in ("insert_one", "update_one", "find_one_and_update", "delete_many"):
            original = getattr(coll, name)

            async def recorded(*args, _original=original, _name=name, _coll=coll.name, **kw):
                sent.append((_coll, _name))
                return await _original(*args, **kw)

            setattr(coll, name, recorded)
    return sent


async def test_the_seat_ledger_decides_first_and_the_sign_up_follows_in_every_transition():
    """The order docs/activities.md, "No overbooking", relies on: each transition's ledger
    write, then the sign-up's, then the mark cleared; one transition after the other."""
    w = ActivitiesWorld()
    activity = await w.activity((1,))
    a = await w.sign_up(activity, await w.member("a"))
    await w.member("b")
    sent = record_writes(w)
    b = await w.sign_up(activity, "b")
    assert b.signup["status"] == "waitlisted"
    follows = [("signups", "update_one"), ("shifts", "update_one")]  # the sign-up, the mark
    claim = [("signups", "insert_one"), ("shifts", "find_one_and_update")]
    assert sent == [*claim, ("shifts", "find_one_and_update"), *follows]  # no seat: the line
    sent.clear()
    await w.signups.cancel(a.signup, "cancelled-by-member", w.clock())
    # a gives the seat back (and follows), then b is promoted into it (and follows).
    assert sent == [("shifts", "update_one"), *follows, ("shifts", "update_one"), *follows]
    assert w.signup_doc(b.signup["_id"])["status"] == "confirmed"
