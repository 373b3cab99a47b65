"""Engagement on the staged unit of work (on memory, no servers): a write whose outcome decides is
committed where it is made, the others are staged, and a use case that fails drops what it staged
since its last commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.engagement import domain
from shared.clock import epoch_ms
from shared.documents import Doc
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
    await e.store.standing.update_one(  # as the drift scan opens an episode (store.flag_drift)
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
