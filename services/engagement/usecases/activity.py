"""What members did: the service's own activity events (and hours approved) as facts in the
members' standings, first answers noted on their questions, referrals made to count."""

from __future__ import annotations

from services.engagement import counted, domain
from services.engagement.scoring import Scoring
from services.engagement.store import EngagementStore
from services.engagement.usecases.base import Batch
from shared.clock import Clock, epoch_ms, utcnow
from shared.events import CommentAdded


class Activity:
    """Activity events, a whole batch at a time: the facts in one write per member
    (scoring.py, its own unit of work)."""

    def __init__(self, store: EngagementStore, scoring: Scoring, clock: Clock) -> None:
        self.store = store
        self.scoring = scoring
        self.clock = clock

    async def record(self, batch: Batch) -> None:
        """A batch of activity events: first answers noted on their questions, then the facts
        into the members' standings."""
        now = self.clock()
        facts: list[domain.Fact] = []
        first_answers: dict[str, int] = {}
        for event, data in batch:
            facts += domain.facts_from_event(event.id, event.time, data)
            if isinstance(data, CommentAdded) and data.author_id != data.post_author_id:
                at = epoch_ms(data.created_at)
                first_answers[data.post_id] = min(at, first_answers.get(data.post_id, at))
        # Counted first (an erased member's hours too: the erasure takes them back either way),
        # stamped with the time they are written, not the clock's: folding relies on it
        # (shared/tally.py). A documented real-time write stamp.
        counters = self.store.counters
        await counters.add(counted.activity_windows(counters, batch, utcnow()))
        await self.store.note_first_answers(first_answers)
        credits = await self._referral_credits(facts)
        await self.scoring.record(facts + credits, now)
        # Noted after they are recorded (a crash in between records them again: the same id, so
        # nothing is added twice); a noted friend's later activity needs no look at the referrer.
        await self.store.note_referrals_counted(
            [c.id.removeprefix("referral:") for c in credits], now
        )

    async def _referral_credits(self, facts: list[domain.Fact]) -> list[domain.Fact]:
        """The referrals the friends' activity in `facts` makes count
        (domain.referral_credits)."""
        doers = {f.member_id for f in facts if f.kind in domain.REFERRAL_ACTIVATING}
        if not doers:
            return []
        friends = {
            m: doc
            for m, doc in (await self.store.referral_links(doers)).items()
            if doc.get("referred_by") and not doc.get("referral_counted_ms")
        }
        referrers = {doc["referred_by"] for doc in friends.values()} - set(friends)
        if not friends:
            return []
        known = {**friends, **await self.store.referral_links(referrers)}
        return domain.referral_credits(facts, known)
