"""The community's kept counters: what each counted change adds, and the figures read from them.

`GET /v1/stats` must not cost more as the community grows, so its figures are counters kept as
the changes happen (shared/tally.py: a delta document per counted change, its id naming the
change, so a redelivery or a retry counts once), not counts over the members, posts or hours:

- members now, joins, joins by referral: per member transition (joined, left, erased);
- new members, posts, questions, answered questions, returns after drift, approved hours: per
  thing counted, in the hour it happened (the join, the post's creation, the question's
  creation for its first answer by another member, the return, the approval), so that a window
  ("the last 7 days") is the sum of its whole hours. The part hour at the window's start is
  counted from the documents by their indexed time (at most an hour of them), so the figure is
  exact. An erasure takes back what it deletes (the member's join, returns and hours).

Nothing here reads more than an hour of documents; the deltas are summed since the last fold
(the periodic job folds them every few minutes).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.clock import epoch_ms
from shared.documents import Doc
from shared.events import HoursApproved, MemberJoined, PostCreated
from shared.query import count, total, where
from shared.tally import Tally, first_whole_hour

#: Kept by member transition, and in the hour the counted thing happened (the windows).
MEMBER_COUNTS = ("members", "joins", "referred")
WINDOWED = ("new", "posts", "questions", "answered", "returns", "hours")
COUNTED = MEMBER_COUNTS + WINDOWED
#: How far back the hours are kept: the longest window (30 days, from the start of a UTC day).
KEEP = timedelta(days=31)
#: Marks the counters filled with the month before them (see `fill`).
FILLED = "windows-filled"


def tally(collection: Any) -> Tally:
    return Tally(collection, "community", COUNTED, keep=KEEP)


# -- what a change adds (each delta's id names the change: recorded again, it counts once) --------


def joined(counters: Tally, member_id: str, joined_ms: int, at: datetime) -> Doc | None:
    return counters.delta(f"{member_id}:joined-at", {"new": 1}, at, joined_ms)


def erased_join(counters: Tally, member_id: str, joined_ms: int, at: datetime) -> Doc | None:
    return counters.delta(f"{member_id}:joined-at:erased", {"new": -1}, at, joined_ms)


def posted(counters: Tally, post_id: str, kind: str, created_ms: int, at: datetime) -> Doc | None:
    counts = {"posts": 1, "questions": int(kind == "question")}
    return counters.delta(f"post:{post_id}", counts, at, created_ms)


def answered(counters: Tally, post_id: str, created_ms: int, at: datetime) -> Doc | None:
    """A question's first answer by another member, counted in the hour it was asked."""
    return counters.delta(f"answered:{post_id}", {"answered": 1}, at, created_ms)


def returned(counters: Tally, return_id: str, at_ms: int, at: datetime, n: int = 1) -> Doc | None:
    suffix = "" if n > 0 else ":erased"
    return counters.delta(f"return:{return_id}{suffix}", {"returns": n}, at, at_ms)


def hours(
    counters: Tally, entry_id: str, amount: float, decided_ms: int, at: datetime
) -> Doc | None:
    suffix = "" if amount > 0 else ":erased"
    return counters.delta(f"hours:{entry_id}{suffix}", {"hours": amount}, at, decided_ms)


def member_windows(
    counters: Tally, data: Any, before: str | None, after: str, member: Doc | None, at: datetime
) -> list[Doc | None]:
    """A member event's windowed deltas: a join in the hour it happened; an erasure takes it
    back (the projection forgets the join's time, so the windows must too)."""
    if isinstance(data, MemberJoined):
        first = before is None
        return [joined(counters, data.member_id, epoch_ms(data.joined_at), at)] if first else []
    joined_ms = (member or {}).get("joined_at_ms")
    if after == "erased" and before != "erased" and joined_ms is not None:
        return [erased_join(counters, data.member_id, int(joined_ms), at)]
    return []


def activity_windows(
    counters: Tally, batch: list[tuple[Any, Any]], at: datetime
) -> list[Doc | None]:
    """The windowed deltas of a batch of activity events: posts when created, approved hours
    when approved (the event's time: the entry's `decided_ms`)."""
    deltas: list[Doc | None] = []
    for event, data in batch:
        if isinstance(data, PostCreated):
            created = epoch_ms(data.created_at)
            deltas.append(posted(counters, data.post_id, data.kind, created, at))
        elif isinstance(data, HoursApproved):
            decided = epoch_ms(event.time)
            deltas.append(hours(counters, data.entry_id, data.hours, decided, at))
    return deltas


# -- the figures ------------------------------------------------------------------------------


async def windowed(store: Any, now: datetime, since: dict[str, int]) -> dict[str, float]:
    """The kept totals (members, joins, referred) and the windowed figures from `since`
    (`week`, `month`, `hours` start, epoch ms): the kept whole hours, and the part hour before
    them counted over the documents' time index."""
    week, month, first_day = since["week"], since["month"], since["hours"]
    kept, (w7, w30, wh) = await store.counters.read([week, month, first_day])

    async def edge(collection: Any, start: int, field: str, **also: Any) -> int:
        end = first_whole_hour(start)
        if end <= start:
            return 0
        return await count(collection, {**also, field: {"$gte": start, "$lt": end}})

    hours_edge = 0.0
    if first_whole_hour(first_day) > first_day:
        window = {"$gte": first_day, "$lt": first_whole_hour(first_day)}
        hours_edge = await total(store.hours, {"status": "approved", "decided_ms": window}, "hours")
    posts = store.posts
    return {
        **{name: kept.get(name, 0.0) for name in MEMBER_COUNTS},
        "new_7d": w7["new"] + await edge(store.members, week, "joined_at_ms"),
        "posts_7d": w7["posts"] + await edge(posts, week, "created_ms"),
        "questions_7d": w7["questions"] + await edge(posts, week, "created_ms", kind="question"),
        "questions_30d": w30["questions"] + await edge(posts, month, "created_ms", kind="question"),
        "answered_30d": w30["answered"] + await edge(posts, month, "answered_created_ms"),
        "returns_30d": w30["returns"] + await edge(store.returns, month, "at_ms"),
        "hours_30d": wh["hours"] + hours_edge,
    }


async def unfilled(store: Any, now: datetime) -> list[Doc | None] | None:
    """Once, when the counters are newer than the data (an upgrade): the month's joins, posts,
    answers, returns and approved hours as deltas, read by their indexed times (a month of
    them); None when they were filled before. The same ids as the live changes': whatever both
    record counts once. Staged by `uow.counters.fill` (repositories.py): the deltas, then the
    mark that they are filled."""
    counters = store.counters
    if await counters.collection.find_one({"_id": f"{counters.name}:{FILLED}"}):
        return None
    since = {"$gte": epoch_ms(now - KEEP - timedelta(days=1))}
    deltas: list[Doc | None] = []
    async for m in store.members.find(where(joined_at_ms=since), {"joined_at_ms": 1}):
        deltas.append(joined(counters, m["_id"], int(m["joined_at_ms"]), now))
    async for p in store.posts.find(where(created_ms=since), {"kind": 1, "created_ms": 1}):
        deltas.append(posted(counters, p["_id"], str(p.get("kind")), int(p["created_ms"]), now))
    async for p in store.posts.find(where(answered_created_ms=since), {"answered_created_ms": 1}):
        deltas.append(answered(counters, p["_id"], int(p["answered_created_ms"]), now))
    async for r in store.returns.find(where(at_ms=since), {"at_ms": 1}):
        deltas.append(returned(counters, r["_id"], int(r["at_ms"]), now))
    approved = where(status="approved", decided_ms=since)
    async for h in store.hours.find(approved, {"hours": 1, "decided_ms": 1}):
        deltas.append(hours(counters, h["_id"], float(h["hours"]), int(h["decided_ms"]), now))
    return deltas
