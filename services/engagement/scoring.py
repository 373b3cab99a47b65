"""Recording activity facts into members' standings and keeping each member's level.

A batch of facts is one read of the standings concerned and one bulk write back, each member's
write guarded by the version read (so two consumers or replicas never lose each other's facts)
and carrying its level-changed in the same write. Each `record` or `settle` is one unit of work,
committed at each round's standings write (which members lost the race decides the next round),
so the level-changed events of a round are published as it is written; the returns after drift a
round notes are staged and made by the next commit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.engagement import domain, ranking
from services.engagement.record import Record, as_doc, figures
from services.engagement.repositories import EngagementUnitOfWork
from services.engagement.store import RANK_FIELDS, EngagementStore, StandingWrite
from shared.bus import TransientError
from shared.clock import epoch_ms
from shared.documents import Doc
from shared.events import CloudEvent, LevelChanged, new_event

log = logging.getLogger("sarafan.engagement")

#: Namespace of the deterministic ids of the events this service derives (level, drift, ...).
EVENT_NAMESPACE = uuid.UUID("6b0f1a52-3c1e-4c57-9a57-7d3c2a8e0f11")
#: How often a batch re-reads and recomputes standings that changed under it.
ATTEMPTS = 8


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def derived_event_id(*parts: str) -> str:
    """The same cause gives the same event id, on every replica and every retry."""
    return str(uuid.uuid5(EVENT_NAMESPACE, ":".join(parts)))


@dataclass
class Copy:
    """What a member's standing copies from member events (for its indexes): active, region,
    join time; fields to set and fields to unset, in the order the events came."""

    fields: Doc = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)

    def then(self, fields: Doc, unset: Iterable[str] = ()) -> None:
        self.fields.update(fields)
        for name in unset:
            self.fields.pop(name, None)
            if name not in self.unset:
                self.unset.append(name)


class Contended(TransientError):
    """Standings kept changing under a batch: the wrapper retries it later."""


class Scoring:
    """Applies facts to standings and settles levels (promotion and decay-driven demotion)."""

    def __init__(
        self,
        store: EngagementStore,
        rules: domain.Rules,
        unit_of_work: Callable[[], EngagementUnitOfWork],
    ) -> None:
        self.store = store
        self.rules = rules
        self.unit_of_work = unit_of_work

    async def record(
        self,
        facts: list[domain.Fact],
        now: datetime,
        copies: dict[str, Copy] | None = None,
        erased: set[str] | None = None,
    ) -> None:
        """Add the facts to their members' standings (a fact already there is skipped), with
        what the standings copy from member events (`copies`) in the same write."""
        copies = copies or {}
        if not facts and not copies:
            return
        if erased is None:
            erased = await self.store.erased_among({f.member_id for f in facts})
        # An erased member is forgotten: a late or replayed event must not bring them back.
        by_member: dict[str, list[domain.Fact]] = defaultdict(list)
        for member_id in copies:
            by_member[member_id] = []
        for f in facts:
            if f.member_id not in erased:
                by_member[f.member_id].append(f)
        await self._update({m: f for m, f in by_member.items() if m not in erased}, now, copies)

    async def settle(self, member_ids: Iterable[str], now: datetime) -> None:
        """Recompute standings as of `now` (decay, windows, folding) and move levels."""
        await self._update({m: [] for m in member_ids}, now, {})

    async def _update(
        self, by_member: dict[str, list[domain.Fact]], now: datetime, copies: dict[str, Copy]
    ) -> None:
        pending = dict(by_member)
        async with self.unit_of_work() as uow:
            for _attempt in range(ATTEMPTS):
                if not pending:
                    return
                lost = await self._attempt(uow, pending, now, copies)
                pending = {m: by_member[m] for m in lost}
                if pending:
                    # Writers that collided would collide again at once: spread them out.
                    await asyncio.sleep(random.uniform(0, 0.005 * 2**_attempt))
        if not pending:
            return  # the last attempt went through
        raise Contended(f"standings of {len(pending)} member(s) kept changing; retried later")

    async def _attempt(
        self,
        uow: EngagementUnitOfWork,
        pending: dict[str, list[domain.Fact]],
        now: datetime,
        copies: dict[str, Copy],
    ) -> set[str]:
        """One read of the standings, one guarded write back; the members whose standing
        changed in between (to be read and recomputed again)."""
        docs = await self.store.standings(pending)
        writes: list[StandingWrite] = []
        returns: list[tuple[str, int, int]] = []
        for member_id, facts in pending.items():
            doc = docs.get(member_id)
            if doc is not None and doc.get("erased"):
                continue
            write, came_back = self._next(member_id, doc, facts, now, copies.get(member_id))
            writes.append(write)
            if came_back is not None:
                returns.append(came_back)
        # Committed there (with what the round before staged): who lost the race decides.
        lost = await uow.commit(uow.standings.write(writes))
        # Staged: made by the next round's commit, or when the unit of work ends.
        uow.standings.record_returns([r for r in returns if r[0] not in lost])
        return lost

    def _next(
        self,
        member_id: str,
        doc: Doc | None,
        facts: list[domain.Fact],
        now: datetime,
        copy: Copy | None = None,
    ) -> tuple[StandingWrite, tuple[str, int, int] | None]:
        """The write that brings one standing up to date, and a return after drift if any."""
        doc = {**(doc or {}), **(copy.fields if copy else {})}
        record = Record.of(doc).add(facts, self.rules, now)
        score = record.score(now, self.rules)
        level, fields, events = self._level(member_id, doc, score, now)
        fields.update(as_doc(record))
        derived = figures(member_id, record, level, now, self.rules)
        fields.update(derived.fields)
        unset = list(derived.unset)
        if not doc.get("active"):
            # Only members of the community now are ranked (leaving unsets these too).
            for rank in RANK_FIELDS:
                fields.pop(rank, None)
            unset = sorted(set(unset) | set(RANK_FIELDS))
        drift_from = doc.get("drift_from_ms")
        if (
            level in domain.DRIFT_LEVELS
            and record.last_ms
            and int(drift_from or 0) < record.last_ms
        ):
            # When this member starts drifting, unless active again before: the drift scan's
            # index. Unset once the episode is reported (`flag_drift`) or the level drops.
            fields["drift_due_ms"] = record.last_ms + _ms(self.rules.drift_after)
        else:
            unset.append("drift_due_ms")
        came_back = None
        if (
            drift_from
            and record.last_ms
            and record.last_ms > drift_from
            and doc.get("return_noted_ms") != drift_from
        ):
            came_back = (member_id, int(drift_from), int(record.last_ms))
        if copy is not None:
            fields.update(copy.fields)
            unset = sorted((set(unset) | set(copy.unset)) - set(fields))
        unset = self._with_keys(member_id, doc, fields, unset, now)
        version = doc.get("version")
        return StandingWrite(member_id, version, fields, unset, events), came_back

    def _with_keys(
        self, member_id: str, doc: Doc, fields: Doc, unset: list[str], now: datetime
    ) -> list[str]:
        """Add the segments' rank keys of the standing as written (ranking.py) to `fields`,
        and when a key's window closes to `due_ms`; returns the fields to unset."""
        after = {**doc, **fields}
        for name in unset:
            after.pop(name, None)
        keys, unkeyed = ranking.segment_keys(member_id, after, now, self.rules)
        fields.update(keys)
        due = ranking.keys_due(after, now, self.rules)
        if due is not None:
            fields["due_ms"] = min(int(fields.get("due_ms") or due), due)
        return sorted((set(unset) | set(unkeyed)) - set(fields))

    def _level(
        self, member_id: str, doc: Doc, score: float, now: datetime
    ) -> tuple[str, Doc, list[CloudEvent]]:
        """The member's level after `score`, the standing's level fields, and level-changed
        when it moved."""
        current = doc.get("level", domain.LEVELS[0])
        seq = int(doc.get("level_seq", 0))
        level = domain.next_level(current, score, self.rules)
        if level == current:
            return level, ({} if "level" in doc else {"level": level}), []
        event = new_event(
            LevelChanged(member_id=member_id, old_level=current, new_level=level,
                         score=round(max(score, 0.0), 2)),
            # The same move gets the same id on every replica: a twin is de-duplicated.
            event_id=derived_event_id("level-changed", member_id, str(seq + 1)),
            time=now,
        )  # fmt: skip
        return level, {"level": level, "level_seq": seq + 1, "changed_ms": epoch_ms(now)}, [event]
