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

from collections.abc import Callable
from datetime import datetime

from services.activities.store import ActivitiesStore, ActivitiesUnitOfWork
from shared.documents import Doc

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
    def __init__(
        self, store: ActivitiesStore, unit_of_work: Callable[[], ActivitiesUnitOfWork]
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work

    async def first_time(self, uow: ActivitiesUnitOfWork, signup: Doc) -> bool:
        """Whether this check-in is the member's first attendance ever (claimed once: the
        claim is committed here, with whatever `uow` staged before it, since it decides)."""
        if (await uow.commit(uow.members.claim_first(signup))).modified_count:
            return True
        found = self.store.members.find_one({"_id": signup["member_id"]}, {"first_signup": 1})
        return ((await found) or {}).get("first_signup") == signup["_id"]

    async def count(self, signup: Doc, now: datetime) -> None:
        """Bring the shift's counters up to this sign-up's attendance (once per kind)."""
        await self.count_many([signup], now)

    async def count_many(self, signups: list[Doc], now: datetime) -> None:
        """`count` for many sign-ups at once (the close job's no-shows): every counter in one
        bulk write, each guarded by its own marker, and one clearing what was counted, both
        made on leaving the block (after the first-time claims, each committed as it comes)."""
        figures: list[tuple[str, str, Doc]] = []
        async with self.unit_of_work() as uow:
            for signup in signups:
                state = signup.get("att")
                first = state in ("present", "attended") and await self.first_time(uow, signup)
                su, sid = signup["_id"], signup["shift_id"]
                for kind, increments in kinds_of(signup, first).items():
                    figures.append((sid, f"{su}:{kind}", increments))
            counted = [s for s in signups if s.get("uncounted_ms") is not None]
            if figures:
                uow.ledgers.count_figures(figures)
            if counted:
                uow.signups.clear_uncounted(counted)
