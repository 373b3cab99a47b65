"""A shift's figures, kept in its ledger and counted once per sign-up and kind.

Attended, walk-ins, first-time attendees, no-shows and hours are counters of the shift's ledger
document, so a report or the community's stats add up at most a window of shifts and never
count sign-ups. Each counter moves in one guarded update that records what it counted in the
same document (`counted.<signup id>:<kind>`, docs/patterns.md, idempotent effects): counting a
sign-up again changes nothing. A sign-up whose attendance changed carries `uncounted_ms` until
its figures are in; the sweeper counts what a crash left (from the sign-up's state, so it
reaches the same figures).

A first-time attendee is a member whose first attendance ever was on this shift: the member's
projection remembers the sign-up of their first check-in (`first_signup`), claimed by one
conditional update, so the member is first once.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import UpdateOne

from services.activities.store import ActivitiesStore
from shared.documents import Doc
from shared.query import where

#: Kinds of figures one sign-up counts, each at most once.
ATTENDED, HOURS, NO_SHOW = "a", "h", "n"


def kinds_of(signup: Doc, first_time: bool) -> dict[str, Doc]:
    """The ledger increments a sign-up's attendance stands for, by kind."""
    state = signup.get("att")
    kinds: dict[str, Doc] = {}
    if state in ("present", "attended"):
        attended: Doc = {"attended": 1}
        if signup.get("walk_in"):
            attended["walk_ins"] = 1
        if first_time:
            attended["first_timers"] = 1
        kinds[ATTENDED] = attended
    if state == "attended":
        kinds[HOURS] = {"hours_cs": round(float(signup.get("hours") or 0) * 100)}
    if state == "no-show":
        kinds[NO_SHOW] = {"no_shows": 1}
    return kinds


class ShiftTally:
    def __init__(self, store: ActivitiesStore) -> None:
        self.store = store

    async def first_time(self, signup: Doc) -> bool:
        """Whether this check-in is the member's first attendance ever (claimed once)."""
        member_id, su = signup["member_id"], signup["_id"]
        claimed = await self.store.members.update_one(
            where({"_id": member_id, "status": "active", "first_signup": {"$exists": False}}),
            {"$set": {"first_signup": su, "first_activity": signup["activity_id"]}},
        )
        if claimed.modified_count:
            return True
        member = await self.store.members.find_one({"_id": member_id}, {"first_signup": 1})
        return (member or {}).get("first_signup") == su

    async def count(self, signup: Doc, now: datetime) -> None:
        """Bring the shift's counters up to this sign-up's attendance (once per kind)."""
        await self.count_many([signup], now)

    async def count_many(self, signups: list[Doc], now: datetime) -> None:
        """`count` for many sign-ups at once (the close job's no-shows): every counter in one
        bulk write, each guarded by its own marker, and one clearing what was counted."""
        counters: list[UpdateOne] = []
        counted: list[UpdateOne] = []
        for signup in signups:
            state = signup.get("att")
            first = state in ("present", "attended") and await self.first_time(signup)
            su, sid = signup["_id"], signup["shift_id"]
            for kind, increments in kinds_of(signup, first).items():
                marker = f"counted.{su}:{kind}"
                counters.append(
                    UpdateOne(
                        where({"_id": sid, marker: {"$exists": False}}),
                        {"$inc": increments, "$set": {marker: 1}},
                    )
                )
            if signup.get("uncounted_ms") is not None:
                guard = {"_id": su, "uncounted_ms": int(signup["uncounted_ms"]), "att": state}
                counted.append(UpdateOne(where(guard), {"$unset": {"uncounted_ms": ""}}))
        if counters:
            await self.store.shifts.bulk_write(counters, ordered=False)
        if counted:
            await self.store.signups.bulk_write(counted, ordered=False)
