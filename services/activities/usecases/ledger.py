"""Seats without overbooking: a shift's ledger decides, its sign-ups follow.

A seat is claimed or given back by ONE conditional update of the shift's ledger document
(`shifts`), which holds the roster (`seats.<signup id>`, `queue.<signup id>`, each the sign-up's
attempt), the counters that go with it (`free`, `confirmed`, `waitlisted`) and, in the same
update, a mark `unsettled.<signup id>` naming the transition the sign-up must now follow (to
`confirmed`, `waitlisted` or `cancelled`, with its reason). The filter is the rule: a claim of a
seat matches only while `free > 0` and the sign-up is in neither list nor marked, so fifty
concurrent claims on ten free seats find exactly ten matches, on MongoDB and on nx-27017 alike
(one document, no transaction).

Then the sign-up document follows: `settle` moves it to the marked state with its event
(signed-up, sign-up-changed) in one guarded update (its attempt, and the state it must come
from), and then clears the mark. Whoever made the mark settles it; if that process died in
between, the sweeper (`repair`) finds the ledger by its `unsettled_n` counter and settles it.
Settling is a comparison of two states, not a replay of a delta, so it can run twice, late or
concurrently without counting anything twice. A mark whose sign-up cannot follow any more (it
was withdrawn meanwhile) is undone in the ledger in the same update that clears it. One sign-up
has at most one mark at a time: a new transition waits until the last one is settled (it
settles it).

Every write is staged by the store (`ledger_store.py`, `signup_store.py`) in a unit of work and
committed on its own, right where it is made: each outcome decides the next step, and the order
in which the database sees the writes is what makes every crash point recoverable.

docs/activities.md, "No overbooking", walks through every crash point.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.activities.domain import Conflict
from services.activities.store import ActivitiesStore, ActivitiesUnitOfWork
from shared.clock import epoch_ms
from shared.documents import Doc
from shared.events import SignedUp, SignUpChanged, new_event
from shared.store import projected

log = logging.getLogger("sarafan.activities")

#: Members waiting for one shift at most (a longer line is refused: 409 `waitlist_full`).
WAITLIST_MAX = 1000
#: Rounds a promotion or a retried transition takes at most (each either moves someone or
#: settles a mark it met); past them the sweeper finishes.
ROUNDS = 20
COUNTERS = {"free": 1, "confirmed": 1, "waitlisted": 1, "wait_seq": 1, "status": 1, "ends_ms": 1}


@dataclass(frozen=True)
class Claimed:
    """A sign-up after its claim: confirmed, or waitlisted at `position` (1 is next)."""

    signup: Doc
    position: int | None = None


def _mark(
    k: int,
    to: str,
    source: list[str],
    reason: str | None,
    undo: str | None,
    quiet: bool,
    now_ms: int,
) -> Doc:
    return {
        "op": uuid.uuid4().hex,
        "k": k,
        "to": to,
        "from": source,
        "reason": reason,
        "undo": undo,
        "quiet": int(quiet),
        "at_ms": now_ms,
    }


class Ledger:
    """The seat transitions of sign-ups (claim, cancel, promote) and their settling."""

    def __init__(
        self, store: ActivitiesStore, unit_of_work: Callable[[], ActivitiesUnitOfWork]
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work

    # -- claim ---------------------------------------------------------------------------------

    async def claim(self, signup: Doc, now: datetime) -> Claimed:
        """A pending sign-up takes a seat if one is free, else a place on the waitlist.
        Raises Conflict when the shift takes no sign-ups (not published, waitlist full)."""
        sid, su, k = signup["shift_id"], signup["_id"], int(signup["attempt"])
        now_ms = epoch_ms(now)
        mark = _mark(k, "confirmed", ["pending"], None, "seat", False, now_ms)
        async with self.unit_of_work() as uow:  # the seat, if one is free, decides
            seat = await uow.commit(uow.ledgers.claim_seat(sid, su, k, mark))
        if seat is not None:
            return Claimed(await self.settle(sid, su, now) or signup)
        mark = _mark(k, "waitlisted", ["pending"], None, "queue", False, now_ms)
        async with self.unit_of_work() as uow:  # else a place in line, if there is room
            after = await uow.commit(uow.ledgers.join_queue(sid, su, k, mark, WAITLIST_MAX))
        if after is not None:
            # The line as it stood when this member joined its end (commit order, so fifty
            # concurrent sign-ups read fifty different values), and the ticket that keeps
            # their place in it.
            position = int(after["waitlisted"])
            settled = await self.settle(
                sid, su, now, ticket=int(after["wait_seq"]), position=position
            )
            if int(after.get("free") or 0) > 0 and await self.promote(sid, now):
                # A seat freed between the two updates, maybe this member's now.
                settled = await self.store.signup(su)
                position = await self.position(settled) if settled else None
            return Claimed(settled or signup, position)
        return await self._claim_missed(signup, now)

    async def _claim_missed(self, signup: Doc, now: datetime) -> Claimed:
        """Neither update matched: the shift is closed or full, or someone (a twin request,
        the sweeper) claimed for this sign-up already."""
        sid, su = signup["shift_id"], signup["_id"]
        ledger = await self.store.ledger(
            sid, {"status": 1, f"seats.{su}": 1, f"queue.{su}": 1, f"unsettled.{su}": 1}
        )
        if ledger is None or ledger.get("status") != "published":
            raise Conflict("shift_closed", "this shift takes no sign-ups now")
        if projected(ledger, f"unsettled.{su}") is not None:
            await self.settle(sid, su, now)
        elif projected(ledger, f"seats.{su}") is None and projected(ledger, f"queue.{su}") is None:
            raise Conflict("waitlist_full", f"the waitlist of this shift is full ({WAITLIST_MAX})")
        current = await self.store.signup(su) or signup
        return Claimed(current, await self.position(current))

    async def position(self, signup: Doc) -> int | None:
        """A waitlisted sign-up's place in the line now (1 is next)."""
        if signup.get("status") != "waitlisted" or not signup.get("ticket"):
            return None
        return await self.store.waitlist_position(signup["shift_id"], int(signup["ticket"]))

    # -- cancel ---------------------------------------------------------------------------------

    async def cancel(self, signup: Doc, reason: str, now: datetime, *, quiet: bool = False) -> Doc:
        """A confirmed or waitlisted sign-up gives its place back (sign-up-changed, unless
        `quiet`); a freed seat goes to the first on the waitlist. Returns the sign-up after."""
        su, sid = signup["_id"], signup["shift_id"]
        for _ in range(ROUNDS):
            current = await self.store.signup(su)
            if current is None or current["status"] not in ("confirmed", "waitlisted"):
                return current or signup
            k, held = int(current["attempt"]), current["status"]
            mark = _mark(k, "cancelled", [held], reason, None, quiet, epoch_ms(now))
            async with self.unit_of_work() as uow:  # the ledger gives the place back first
                done = await uow.commit(uow.ledgers.give_back(sid, su, k, held, mark))
            # Not matched: a transition of this sign-up is still unsettled; settle it first.
            await self.settle(sid, su, now)
            if done.modified_count:
                if held == "confirmed":
                    await self.promote(sid, now)
                return await self.store.signup(su) or current
        log.warning("sign-up %s: cancel gave up after %d rounds", su, ROUNDS)
        return await self.store.signup(su) or signup

    # -- promote --------------------------------------------------------------------------------

    async def promote(self, shift_id: str, now: datetime) -> int:
        """Give free seats to the first on the waitlist, one by one (each sign-up-changed
        `promoted`), while the shift is open and has not ended."""
        promoted, tried = 0, set()
        for _ in range(ROUNDS):
            ledger = await self.store.ledger(shift_id, COUNTERS)
            if not _promotable(ledger, epoch_ms(now)):
                break
            first = await self.store.first_waitlisted(shift_id)
            if first is None or first["_id"] in tried:
                break  # those waiting are not settled yet: the sweeper comes back
            su, k = first["_id"], int(first["attempt"])
            mark = _mark(k, "confirmed", ["waitlisted"], "promoted", "seat", False, epoch_ms(now))
            async with self.unit_of_work() as uow:  # the seat moves in the ledger first
                done = await uow.commit(uow.ledgers.promote_seat(shift_id, su, k, mark))
            await self.settle(shift_id, su, now)
            if done.modified_count:
                promoted += 1
            else:
                tried.add(su)
        return promoted

    # -- settle ---------------------------------------------------------------------------------

    async def settle(
        self,
        shift_id: str,
        signup_id: str,
        now: datetime,
        *,
        ticket: int | None = None,
        position: int | None = None,
    ) -> Doc | None:
        """Move the sign-up to the state its mark names (with its event) and clear the mark;
        undo the ledger's change instead when the sign-up cannot follow. Returns the sign-up
        after (None when it does not exist)."""
        ledger = await self.store.ledger(shift_id, {f"unsettled.{signup_id}": 1})
        mark = projected(ledger, f"unsettled.{signup_id}")
        signup = await self.store.signup(signup_id)
        if not isinstance(mark, dict):
            return signup
        k, to = int(mark["k"]), str(mark["to"])
        if signup is not None and int(signup["attempt"]) == k and signup["status"] in mark["from"]:
            if await self._follow(signup, mark, now, ticket, position):
                await self._clear(shift_id, signup_id, mark)
                return await self.store.signup(signup_id)
            signup = await self.store.signup(signup_id)
        if signup is not None and int(signup["attempt"]) == k and signup["status"] == to:
            await self._clear(shift_id, signup_id, mark)  # another settler was first
        else:
            await self._undo(shift_id, signup_id, mark)
        return signup

    async def _follow(
        self, signup: Doc, mark: Doc, now: datetime, ticket: int | None, position: int | None
    ) -> bool:
        su, sid, to = signup["_id"], signup["shift_id"], mark["to"]
        changes: Doc = {"status": to, "changed_ms": epoch_ms(now)}
        unset: Doc = {"pending_ms": ""}
        if to == "waitlisted":
            changes["ticket"] = ticket if ticket is not None else await self._new_ticket(sid)
        if to == "cancelled":
            changes.update(reason=mark["reason"], cancelled_ms=epoch_ms(now))
            unset["live_end_ms"] = ""
        events = []
        if not mark.get("quiet"):
            if position is None and to == "waitlisted":
                position = await self.store.waitlist_position(sid, int(changes["ticket"]))
            events.append(new_event(_event(signup, to, mark.get("reason"), position), time=now))
        # The sign-up's guarded move decides what follows (clear the mark, or compare again):
        # it is committed here, on its own, before anything else is written.
        async with self.unit_of_work() as uow:
            follow = uow.signups.follow_mark(su, mark, changes, unset, events)
            done = await uow.commit(follow)
        return bool(done.modified_count)

    async def _new_ticket(self, shift_id: str) -> int:
        """A ticket for a waitlisted sign-up settled by the sweeper: the one its claim drew
        was lost with the process, so it goes to the end of the line."""
        async with self.unit_of_work() as uow:
            after = await uow.commit(uow.ledgers.draw_ticket(shift_id))
        return int((after or {}).get("wait_seq") or 1)

    async def _clear(self, shift_id: str, signup_id: str, mark: Doc) -> None:
        async with self.unit_of_work() as uow:  # made on leaving, before the sign-up is read
            uow.ledgers.clear_mark(shift_id, signup_id, mark["op"])

    async def _undo(self, shift_id: str, signup_id: str, mark: Doc) -> None:
        """The sign-up did not follow (withdrawn, or moved on): the ledger gives back what
        the mark took, in the update that clears it."""
        k, undo = int(mark["k"]), mark.get("undo")
        held = "seats" if undo == "seat" else "queue" if undo == "queue" else None
        taken = None
        if held is not None:
            ledger = await self.store.ledger(shift_id, {f"{held}.{signup_id}": 1})
            if projected(ledger, f"{held}.{signup_id}") == k:
                taken = (held, k)
        async with self.unit_of_work() as uow:
            undone = uow.ledgers.undo_mark(shift_id, signup_id, mark["op"], taken)
            done = await uow.commit(undone)
        if done.modified_count:
            log.info(
                "sign-up %s did not follow its %s; undone in the ledger", signup_id, mark["to"]
            )

    async def settle_all(self, shift_id: str, now: datetime, older_than_ms: int | None) -> int:
        """Settle every mark of the shift (older than the given time, when given)."""
        ledger = await self.store.ledger(shift_id, {"unsettled": 1})
        marks = (ledger or {}).get("unsettled") or {}
        done = 0
        for su, mark in marks.items():
            if isinstance(mark, dict) and (
                older_than_ms is None or int(mark["at_ms"]) <= older_than_ms
            ):
                await self.settle(shift_id, su, now)
                done += 1
        if done:
            await self.promote(shift_id, now)
        return done


def _promotable(ledger: Doc | None, now_ms: int) -> bool:
    return (
        ledger is not None
        and ledger.get("status") == "published"
        and int(ledger.get("free") or 0) > 0
        and int(ledger.get("waitlisted") or 0) > 0
        and int(ledger.get("ends_ms") or 0) > now_ms
    )


def _event(signup: Doc, to: str, reason: Any, position: int | None) -> Any:
    common = {
        "signup_id": signup["_id"],
        "activity_id": signup["activity_id"],
        "shift_id": signup["shift_id"],
        "member_id": signup["member_id"],
    }
    if signup["status"] == "pending":
        return SignedUp(**common, status=to, position=position if to == "waitlisted" else None)
    return SignUpChanged(**common, status=to, reason=reason)
