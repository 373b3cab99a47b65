"""Recording activity facts and keeping each member's level (level-changed via the outbox)."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from services.engagement import domain
from services.engagement.store import Doc, EngagementStore, LevelMove
from shared.events import LevelChanged, new_event
from shared.outbox import Relay
from shared.store import epoch_ms, from_epoch_ms

log = logging.getLogger("sarafan.engagement")

#: Namespace of the deterministic ids of the events this service derives (level, drift, ...).
EVENT_NAMESPACE = uuid.UUID("6b0f1a52-3c1e-4c57-9a57-7d3c2a8e0f11")
#: Level refreshes read members' buckets in chunks of this many members.
CHUNK = 500
#: A base older than BASE_REFRESH is re-derived, ending BASE_LAG before today.
BASE_REFRESH = timedelta(days=14)
BASE_LAG = timedelta(days=7)


def derived_event_id(*parts: str) -> str:
    """The same cause gives the same event id, on every replica and every retry."""
    return str(uuid.uuid5(EVENT_NAMESPACE, ":".join(parts)))


class Scoring:
    """Applies facts to the day buckets and settles levels (promotion and decay-driven demotion)."""

    def __init__(self, store: EngagementStore, rules: domain.Rules, relay: Relay) -> None:
        self.store = store
        self.rules = rules
        self.relay = relay

    async def record(self, facts: list[domain.Fact], now: datetime) -> None:
        """Store the facts (one bulk write), then settle the levels of the members concerned."""
        if not facts:
            return
        erased = await self.store.erased_among({f.member_id for f in facts})
        # An erased member is forgotten: a late or replayed event must not bring them back.
        kept = [f for f in facts if f.member_id not in erased]
        await self.store.record_facts(kept, self.rules)
        late: dict[str, datetime] = {}
        for f in kept:
            if f.at < domain.day_of(now) - BASE_LAG:  # maybe before a base: see roll_bases
                late[f.member_id] = min(domain.day_of(f.at), late.get(f.member_id, f.at))
        await self.store.forget_bases(late)
        await self.settle({f.member_id for f in kept}, now)

    async def scores(
        self, member_ids: Iterable[str], now: datetime, standings: dict[str, Doc] | None = None
    ) -> dict[str, float]:
        """Decayed scores at `now`, computed on read.

        A member whose standing holds a base (their score at day D of every bucket before D,
        kept by `roll_bases`) needs only the buckets since D; others all buckets within the
        horizon. The base enters the sum as one more (day, mass) pair.
        """
        ids = set(member_ids)
        if standings is None:
            standings = await self.store.standings(ids)
        bases = {
            m: (from_epoch_ms(s["base_day_ms"]), float(s["base_mass"]))
            for m, s in standings.items()
            if m in ids and s.get("base_day_ms") is not None
        }
        pairs: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
        rows = []
        if bases:
            rows += await self.store.masses(bases, since=min(day for day, _ in bases.values()))
        if ids - set(bases):
            rows += await self.store.masses(ids - set(bases), domain.score_horizon(now, self.rules))
        for row in rows:
            member_id, day = row["member_id"], from_epoch_ms(row["day_ms"])
            base = bases.get(member_id)
            if base is None or day >= base[0]:
                pairs[member_id].append((day, float(row.get("mass", 0.0))))
        for member_id, base in bases.items():
            pairs[member_id].append(base)
        return {m: domain.score_of_buckets(pairs.get(m, []), now, self.rules) for m in ids}

    async def settle(self, member_ids: Iterable[str], now: datetime) -> None:
        """Bring stored levels in line with current scores; note returns after drift."""
        ids = sorted(set(member_ids))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            standings = await self.store.standings(chunk)
            scores = await self.scores(chunk, now, standings)
            await self._settle_levels(scores, standings, now)
            await self._note_returns(standings)

    async def settle_all(self, now: datetime) -> None:
        """Decay alone can demote: re-check every member above the first level."""
        above = await self.store.standings_at(domain.LEVELS[1:])
        await self.roll_bases(above, now)
        await self.settle((s["_id"] for s in above), now)

    async def roll_bases(self, standings: list[Doc], now: datetime) -> None:
        """Re-derive from the facts the base of members whose base is older than two weeks.

        The new base stops a week before today, so facts arriving up to a week late land after
        it; a later one makes `record` forget the base, so reads sum the buckets again until the
        next roll (and a roll that raced with it does not store its now stale base).
        """
        stale_before = epoch_ms(domain.day_of(now) - BASE_REFRESH)
        base_day = domain.day_of(now) - BASE_LAG
        stale = {
            s["_id"]: int(s.get("base_seq", 0))
            for s in standings
            if s.get("base_day_ms", 0) < stale_before
        }
        horizon = domain.score_horizon(now, self.rules)
        members = sorted(stale)
        for start in range(0, len(members), CHUNK):
            chunk = members[start : start + CHUNK]
            pairs: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
            for row in await self.store.masses(chunk, since=horizon, before=base_day):
                pairs[row["member_id"]].append((from_epoch_ms(row["day_ms"]), float(row["mass"])))
            for member_id in chunk:
                mass = domain.score_of_buckets(pairs.get(member_id, []), base_day, self.rules)
                await self.store.set_base(member_id, stale[member_id], base_day, mass)

    async def _settle_levels(
        self, scores: dict[str, float], standings: dict[str, Doc], now: datetime
    ) -> None:
        """Move every member whose level the score changes, in one bulk write; a move that
        lost a race with another consumer or replica is computed again from what won."""
        pending = scores
        for _attempt in range(5):
            moves = [
                move
                for member_id, score in pending.items()
                if (move := self._move(member_id, score, standings.get(member_id), now))
            ]
            if not moves:
                return
            await self.store.change_levels(moves, now)
            standings = await self.store.standings(m.member_id for m in moves)
            pending = {}
            for move in moves:
                after = standings.get(move.member_id, {})
                if after.get("level_seq") == move.seq + 1 and after.get("level") == move.level:
                    self.relay.kick(self.store.standing, move.member_id)
                else:
                    pending[move.member_id] = move.score
        log.warning("levels of %d member(s) still contended; next batch or scan settles them",
                    len(pending))  # fmt: skip

    def _move(
        self, member_id: str, score: float, standing: Doc | None, now: datetime
    ) -> LevelMove | None:
        current = (standing or {}).get("level", domain.LEVELS[0])
        seq = int((standing or {}).get("level_seq", 0))
        new = domain.next_level(current, score, self.rules)
        if new == current:
            return None
        event = new_event(
            LevelChanged(member_id=member_id, old_level=current, new_level=new,
                         score=round(max(score, 0.0), 2)),
            # The same move gets the same id on every replica: a twin publish is de-duplicated.
            event_id=derived_event_id("level-changed", member_id, str(seq + 1)),
            time=now,
        )  # fmt: skip
        return LevelMove(member_id, seq, new, score, event)

    async def _note_returns(self, standings: dict[str, Doc]) -> None:
        drifted = {
            m: int(s["drift_from_ms"]) for m, s in standings.items() if s.get("drift_from_ms")
        }
        if not drifted:
            return
        last = await self.store.last_active(drifted)
        for member_id, drift_from_ms in drifted.items():
            came_back = last.get(member_id, 0)
            if came_back > drift_from_ms:
                await self.store.record_return(member_id, drift_from_ms, from_epoch_ms(came_back))
