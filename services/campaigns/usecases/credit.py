"""Crediting: points into a member's standing in a campaign, with the milestones they pass.

The rule is `domain.credit` (once per key, each milestone once); this module turns what it
returns into the one write of the standing document that applies it. The points, the
`applied` markers, the rank key, each milestone's marker and its milestone-reached event go in
that single-document write (docs/patterns.md, idempotent effects and outbox): all or nothing,
exactly once, whichever of several writers wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from services.campaigns.domain import Credit, Rules, Standing, credit
from services.campaigns.store import field_key, rank_key, standing_id
from shared.documents import Doc
from shared.events import CloudEvent, new_event
from shared.query import where
from shared.uow import Write


@dataclass(frozen=True)
class Award:
    """A credit in one campaign: to the standing of (that campaign, the credit's member)."""

    rules: Rules
    credit: Credit

    @property
    def standing_id(self) -> str:
        return standing_id(self.rules.campaign_id, self.credit.member_id)


@dataclass(frozen=True)
class StandingWrite:
    """The one write that applies a standing's new credits, with its milestone events: the
    insert of a new standing, or an upsert guarded by the version read (a lost race is a
    duplicate key either way: `StandingsRepository.write`)."""

    write: Write
    #: The milestones the write marks reached, and their milestone-reached events.
    crossed: list[int]
    events: list[CloudEvent]

    # What the write sends, events included (the unit of work put them in), to inspect it:
    # tests/unit/test_campaigns_keys.py checks that the events ride in the same write.
    @property
    def document(self) -> Doc | None:
        """The new standing's document; None for an update."""
        return None if self.guard is not None else _sent(self.write.op, "_doc")

    @property
    def guard(self) -> Doc | None:
        return _sent(self.write.op, "_filter")

    @property
    def update(self) -> Doc | None:
        return None if self.guard is None else _sent(self.write.op, "_doc")


def _sent(op: Any, part: str) -> Doc | None:
    # pymongo's write models keep their parts in these attributes (and expose no others).
    value = getattr(op, part, None)
    return dict(value) if value is not None else None


def stored_standing(doc: Doc | None, member_id: str) -> Standing:
    """The rules' view of a stored standing, with the keys it applied and the milestones it
    reached; a member without one starts from nothing."""
    if doc is None:
        return Standing(member_id)
    return Standing(
        member_id,
        float(doc["points"]),
        int(doc["reached_ms"]),
        applied=frozenset(doc.get("applied") or {}),
        milestones=frozenset(int(m) for m in doc.get("milestones") or {}),
    )


def standing_write(doc: Doc | None, awards: Sequence[Award], now_ms: int) -> StandingWrite | None:
    """Fold the awards to one standing (`doc`, None: not stored yet) that it has not applied
    yet into one write; None when there is nothing new."""
    if not awards:
        return None
    first = awards[0]
    # Keys become field names of `applied`: what the standing holds is the field-safe form.
    credits = [replace(a.credit, key=field_key(a.credit.key)) for a in awards]
    before = stored_standing(doc, first.credit.member_id)
    after, raised = credit(first.rules, before, credits)
    new_keys = [k for k in dict.fromkeys(c.key for c in credits) if k not in before.applied]
    if not new_keys:
        return None
    events = [new_event(event, correlation_id=c.correlation_id) for event, c in raised]
    crossed = [event.milestone for event, _ in raised]
    sid = first.standing_id
    ranked = (
        {"rank_key": rank_key(after.member_id, after.points, after.reached_ms)}
        if after.points > 0
        else {}
    )
    if doc is None:
        new = {
            "_id": sid,
            "campaign_id": first.rules.campaign_id,
            "member_id": after.member_id,
            "points": after.points,
            "reached_ms": after.reached_ms,
            **ranked,
            "applied": dict.fromkeys(new_keys, now_ms),
            "milestones": {str(m): now_ms for m in crossed},
            "version": 1,
        }
        return StandingWrite(Write.insert(new, events), crossed, events)
    changes: Doc = {"points": after.points, "reached_ms": after.reached_ms, **ranked}
    changes.update({f"applied.{k}": now_ms for k in new_keys})
    changes.update({f"milestones.{m}": now_ms for m in crossed})
    guard = where({"_id": sid, "version": doc["version"]})
    update = {"$set": changes, "$inc": {"version": 1}}
    write = Write.update(sid, guard, update, events, upsert=True)
    return StandingWrite(write, crossed, events)
