"""Engagement on the staged unit of work (on memory, no servers): a write whose outcome decides is
committed where it is made, the others are staged, and a use case that fails drops what it staged
since its last commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.engagement import counted, domain
from services.engagement.store import StandingWrite
from shared.clock import epoch_ms
from shared.documents import Doc
from shared.events import MemberDrifting, MemberJoined, MemberLeft, new_event
from tests.fakes.engagement import OnMemory, engagement_on_memory

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
#: Her last participation before her drift episode, which names the episode.
WENT_QUIET = NOW - timedelta(days=30)


def post(member: str, event: str, at: datetime = NOW) -> domain.Fact:
    return domain.Fact(f"{event}:post", member, "post", at)


async def one_drifting_and_one_contended(e: OnMemory) -> None:
    """`back` is in a drift episode named by her last post; `other` has a standing."""
    await e.scoring.record([post("back", f"e{i}", WENT_QUIET) for i in range(5)], WENT_QUIET)
    await e.scoring.record([post("other", "o0", WENT_QUIET)], WENT_QUIET)
    await e.store.standing.update_one(  # as the drift scan opens an episode (flag_drift)
        {"_id": "back"}, {"$set": {"drift_from_ms": epoch_ms(WENT_QUIET)}, "$inc": {"version": 1}}
    )


def failing_after_a_lost_race(e: OnMemory) -> list[int]:
    """The store's standings read: the first one is raced by another writer on `other` (its
    write is refused by the version guard, so a second round reads it again), and the second
    one fails. Returns the count of reads."""
    real, reads = e.store.standings, [0]

    async def standings(member_ids) -> dict[str, Doc]:
        reads[0] += 1
        if reads[0] > 1:
            raise RuntimeError("the database went away")
        docs = await real(member_ids)
        await e.store.standing.update_one({"_id": "other"}, {"$inc": {"version": 1}})
        return docs

    e.store.standings = standings  # type: ignore[method-assign]
    return reads


async def test_a_scoring_batch_that_fails_after_a_round_writes_none_of_the_returns_it_staged():
    e = engagement_on_memory()
    await e.store.ensure_indexes()
    await one_drifting_and_one_contended(e)
    facts = [post("back", "b1"), post("other", "o1")]

    reads = failing_after_a_lost_race(e)
    with pytest.raises(RuntimeError, match="went away"):
        await e.scoring.record(facts, NOW)
    assert reads == [2]
    # The first round's standings write was committed (its outcome decided the second round)...
    back = await e.store.standing.find_one({"_id": "back"})
    assert back["last_ms"] == epoch_ms(NOW)
    # ...the return it noted was staged and dropped with the failure: neither recorded nor noted.
    assert await e.store.returns.find_one({"member_id": "back"}) is None
    assert "return_noted_ms" not in back

    # The redelivered batch finds her back again and records the return, once.
    del e.store.standings  # the store's own read again
    await e.scoring.record(facts, NOW)
    await e.scoring.record(facts, NOW)
    returns = await e.store.returns.find({"member_id": "back"}).to_list(None)
    assert [r["_id"] for r in returns] == [f"back:{epoch_ms(WENT_QUIET)}"]
    back = await e.store.standing.find_one({"_id": "back"})
    assert back["return_noted_ms"] == epoch_ms(WENT_QUIET)
    assert (await e.store.counters.totals())["returns"] == 1


async def vera_with_a_post_an_approved_entry_and_kept_answers(e: OnMemory) -> None:
    """Vera joined, posted, had 3 hours approved (counted) and a request of hers answered under
    an Idempotency-Key; a decision on her hours was answered under the decider's."""
    join = MemberJoined(
        member_id="vera", display_name="Vera", region="tver", roles=["volunteer"],
        joined_at=WENT_QUIET, contacts={"email": "vera@example.org"}, consent={"terms": True},
    )  # fmt: skip
    await e.at(WENT_QUIET).members.apply([(new_event(join), join)])
    await e.store.posts.insert_one({"_id": "vp", "author_id": "vera", "title": "Mine", "body": ""})
    decided = epoch_ms(NOW - timedelta(days=1))
    entry = {"_id": "h1", "member_id": "vera", "status": "approved", "hours": 3.0,
             "decided_ms": decided, "decided_by": "staff"}  # fmt: skip
    await e.store.hours.insert_one(entry)
    await e.store.counters.add([counted.hours(e.store.counters, "h1", 3.0, decided, NOW)])
    await e.store.idempotency.insert_one({"_id": "her-post", "member_id": "vera"})
    await e.store.idempotency.insert_one({"_id": "decision", "member_id": "staff"})
    await e.store.decision_requests.insert_one({"_id": "decision", "member_id": "vera"})


async def test_an_erasure_that_fails_before_its_commit_writes_nothing_and_its_retry_finishes_once(
    monkeypatch: pytest.MonkeyPatch,
):
    e = engagement_on_memory()
    await e.store.ensure_indexes()
    await vera_with_a_post_an_approved_entry_and_kept_answers(e)
    hours_read = e.store.hours.find

    def failing_hours_read(*args, **kwargs):  # the erasure reads her approved hours to uncount
        raise RuntimeError("the database went away")

    monkeypatch.setattr(e.store.hours, "find", failing_hours_read)
    left = MemberLeft(member_id="vera", erase=True, left_at=NOW)
    with pytest.raises(RuntimeError, match="went away"):
        await e.at(NOW).members.apply([(new_event(left), left)])

    # What the erasure staged before the failure (her kept answers' deletes) was never made:
    # nothing of it is half-written.
    kept = await e.store.idempotency.find({}).to_list(None)
    assert {d["_id"] for d in kept} == {"her-post", "decision"}
    assert await e.store.decision_requests.find_one({"_id": "decision"}) is not None
    assert (await e.store.post("vp"))["author_id"] == "vera"
    assert await e.store.hours_entry("h1") is not None
    assert (await e.store.counters.totals())["hours"] == 3.0

    # The erasure again, twice: finished, the hours taken back from the counters once.
    monkeypatch.setattr(e.store.hours, "find", hours_read)
    await e.members.forget("vera")
    await e.members.forget("vera")
    assert await e.store.idempotency.find({}).to_list(None) == []
    assert await e.store.decision_requests.find({}).to_list(None) == []
    post = await e.store.post("vp")
    assert (post["author_id"], post["title"]) == (None, "")
    assert await e.store.hours_entry("h1") is None
    assert set((await e.store.standings(["vera"]))["vera"]) == {"_id", "erased", "version"}
    assert (await e.store.counters.totals())["hours"] == 0


async def test_a_member_left_redelivered_after_its_erasure_failed_midway_finishes_it_once(
    monkeypatch: pytest.MonkeyPatch,
):
    e = engagement_on_memory()
    await e.store.ensure_indexes()
    await vera_with_a_post_an_approved_entry_and_kept_answers(e)
    hours_read = e.store.hours.find

    def failing_hours_read(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(e.store.hours, "find", failing_hours_read)
    left = MemberLeft(member_id="vera", erase=True, left_at=NOW)
    event = new_event(left)
    with pytest.raises(RuntimeError, match="went away"):
        await e.at(NOW).members.apply([(event, left)])
    # The projection says erased already; what the erasure was to write is not written.
    assert (await e.store.members_by_id(["vera"]))["vera"]["status"] == "erased"
    assert (await e.store.post("vp"))["author_id"] == "vera"

    # The consumer redelivers the same event: the erasure is done, once; a third is a no-op.
    monkeypatch.setattr(e.store.hours, "find", hours_read)
    await e.at(NOW).members.apply([(event, left)])
    await e.at(NOW).members.apply([(event, left)])
    post = await e.store.post("vp")
    assert (post["author_id"], post["title"]) == (None, "")
    assert await e.store.hours_entry("h1") is None
    assert await e.store.idempotency.find({}).to_list(None) == []
    assert set((await e.store.standings(["vera"]))["vera"]) == {"_id", "erased", "version"}
    assert (await e.store.counters.totals())["hours"] == 0


async def test_the_standings_write_and_the_drift_flag_write_nothing_until_a_commit_reads_them():
    e = engagement_on_memory()
    await e.store.ensure_indexes()
    await e.store.standing.insert_one({"_id": "quiet", "level": "active", "version": 1})
    drifting = MemberDrifting(member_id="quiet", level="active", last_active_at=WENT_QUIET,
                              days_inactive=30)  # fmt: skip
    uow = e.unit_of_work()

    lost = uow.standings.write([StandingWrite("new", None, {"level": "participant"})])
    opened = uow.standings.flag_drift("quiet", 1000, 5, new_event(drifting), version=1)
    # Staged: nothing written, no outcome to read yet, nothing handed to the relay.
    assert set(await e.store.standings(["quiet", "new"])) == {"quiet"}
    assert "drift_from_ms" not in (await e.store.standings(["quiet"]))["quiet"]
    with pytest.raises(RuntimeError, match="no outcome before the commit"):
        _ = lost.result
    assert e.relay.published() == []

    # One commit makes both, in order; each outcome is read from it.
    assert await uow.commit(opened) is True
    assert lost.result == set()
    standings = await e.store.standings(["quiet", "new"])
    assert standings["new"]["level"] == "participant"
    assert standings["quiet"]["drift_from_ms"] == 1000
    assert [ev.type for ev in e.relay.published()] == ["member-drifting"]
