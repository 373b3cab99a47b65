"""What the members service says: the members projection, the community's counters, erasures,
the standings' copies of member fields, and the facts joined and referral."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.engagement import counted, domain, erasure
from services.engagement.repositories import EngagementUnitOfWork
from services.engagement.scoring import Copy, Scoring
from services.engagement.standings import cohort
from services.engagement.store import RANK_FIELDS, EngagementStore
from services.engagement.usecases.base import Batch, Erase
from shared.clock import Clock, epoch_ms, utcnow
from shared.events import EventData, MemberJoined, MemberLeft, MemberUpdated

log = logging.getLogger("sarafan.engagement")


class MemberEvents:
    """Member events, a whole batch at a time: one read of the projection, one insert of the
    counted transitions, one ordered bulk write of the projection, then the batch's facts in
    one write per member (scoring.py, its own unit of work)."""

    def __init__(
        self,
        store: EngagementStore,
        unit_of_work: Callable[[], EngagementUnitOfWork],
        scoring: Scoring,
        erase: Erase,
        clock: Clock,
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work
        self.scoring = scoring
        self.erase = erase
        self.clock = clock

    async def apply(self, batch: Batch) -> None:
        """Member events in their order: counters, projection, erasures, standings' copies,
        facts."""
        now = self.clock()
        store = self.store
        member_ids = {d.member_id for _, d in batch if hasattr(d, "member_id")}
        known = await store.members_by_id(member_ids)
        status = {m: doc.get("status") for m, doc in known.items()}
        referred = {m: bool(doc.get("referred_by")) for m, doc in known.items()}
        # Stamped with the time they are written (not the events' own times, nor the service's
        # clock): folding relies on it (shared/tally.py). A documented real-time write stamp.
        written = utcnow()
        deltas = []
        copies: dict[str, Copy] = {}
        erased: list[str] = []
        unfinished = await self._unfinished_erasures(batch, status)
        for _, data in batch:
            member_id = getattr(data, "member_id", None)
            if member_id in unfinished:
                erased.append(member_id)  # an erasure that failed midway: redelivered, redone
                unfinished.discard(member_id)
            if member_id is None or status.get(member_id) == "erased":
                continue  # a replayed event must not bring an erased member's data back
            if isinstance(data, MemberJoined):
                referred.setdefault(member_id, bool(data.referred_by))
                # An erasure later in this batch takes back this join's count: it needs its time.
                known.setdefault(member_id, {}).setdefault("joined_at_ms", epoch_ms(data.joined_at))
            before = status.get(member_id)
            after, change = domain.counted(before, referred.get(member_id, False), data)
            kind = "joined" if isinstance(data, MemberJoined) else after
            deltas.append(store.counters.delta(f"{member_id}:{kind}", change, written))
            deltas += counted.member_windows(store.counters, data, before, after,
                                             known.get(member_id), written)  # fmt: skip
            status[member_id] = after or status.get(member_id)  # type: ignore[assignment]
            for fields, unset in standing_copies(data):
                copies.setdefault(member_id, Copy()).then(fields, unset)
            if isinstance(data, MemberLeft) and data.erase:
                erased.append(member_id)
        # The counted transitions first: a crash before the projection changes leaves the status
        # as it was, so the retry computes the same deltas (and inserts them once).
        await store.counters.add(deltas)
        await store.projection.apply_many(d for _, d in batch)
        for member_id in erased:
            await self.forget(member_id)
        await self._score(batch, status, copies, now)

    async def _unfinished_erasures(self, batch: Batch, status: dict[str, Any]) -> set[str]:
        """Members already erased in the projection whose member-left with erase came again
        and whose erasure here did not finish (it failed after the projection's tombstone)."""
        again = [
            d.member_id
            for _, d in batch
            if isinstance(d, MemberLeft) and d.erase and status.get(d.member_id) == "erased"
        ]
        if not again:
            return set()
        return set(again) - await erasure.finished(self.store, again)

    async def _score(
        self, batch: Batch, status: dict[str, Any], copies: dict[str, Copy], now: datetime
    ) -> None:
        """The batch's facts and the standing copies in one write per member (scoring.py). A
        fact may name a member this batch does not (a referrer): their status is read here."""
        facts: list[domain.Fact] = []
        for event, data in batch:
            facts += domain.facts_from_event(event.id, event.time, data)
        gone = {m for m, s in status.items() if s == "erased"}
        unknown = {f.member_id for f in facts} - set(status)
        gone |= await self.store.erased_among(unknown) if unknown else set()
        await self.scoring.record(
            facts, now, {m: c for m, c in copies.items() if m not in gone}, gone
        )

    async def forget(self, member_id: str) -> None:
        """Forget an erased member here, and erase what our own stream says about them: the
        events whose subject is their id, and the post-created events of their posts (titles).
        Erased first: a retry after a failure finds the same posts still attributed. The
        erasure reads first, then stages its writes in one unit of work, committed on leaving
        it: one that fails before has written none of them (erasure.py)."""
        post_ids = await erasure.post_ids_of(self.store, member_id)
        # None of these may be published after the erasure.
        await erasure.drop_post_events(self.store, post_ids)
        await self.erase("ENGAGEMENT", f"engagement.*.{member_id}")
        for post_id in post_ids:
            await self.erase("ENGAGEMENT", f"engagement.post-created.{post_id}")
        decisions = await erasure.decision_requests_of(self.store, member_id)
        deltas = await erasure.uncounted(self.store, member_id)
        # In the order the commit makes them (erasure.py says why).
        async with self.unit_of_work() as uow:
            uow.requests.forget(member_id, decisions)
            uow.counters.count(deltas)
            uow.posts.anonymise(member_id)
            uow.hours.forget(member_id)
            uow.standings.forget_returns(member_id)
            # Last: the standing's tombstone says the erasure here is finished (a commit that
            # failed before it leaves none, and the redelivered member-left erases again).
            uow.standings.erase(member_id)
        log.info("erased member %s (%d post(s) anonymised)", member_id, len(post_ids))


def standing_copies(data: EventData) -> list[tuple[dict[str, Any], list[str]]]:
    """What a member's standing copies from a member event (for its indexes)."""
    if isinstance(data, MemberJoined):
        joined = epoch_ms(data.joined_at)
        copied = {"active": 1, "region": data.region, "joined_ms": joined, "cohort": cohort(joined)}
        return [(copied, [])]
    if isinstance(data, MemberUpdated) and "region" in data.changes:
        return [({"region": data.changes["region"]}, [])]
    if isinstance(data, MemberLeft) and not data.erase:
        return [({"active": 0}, list(RANK_FIELDS))]
    return []
