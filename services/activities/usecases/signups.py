"""Signing up, confirming ("I'm coming") and cancelling: what a member (or an organiser) asks.

A sign-up is first written as `pending` (one per member and shift: the unique index refuses a
second), then its claim on the shift's ledger decides confirmed or waitlisted (ledger.py). A
repeat of the same sign-up answers the one stored. A pending sign-up whose request died is
driven on by the next repeat or by the sweeper (`drive`), never left holding nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.activities import domain
from services.activities.domain import Conflict, NotFound
from services.activities.store import ActivitiesStore, ActivitiesUnitOfWork
from services.activities.usecases.ledger import Claimed, Ledger
from shared.clock import Clock, epoch_ms
from shared.documents import Doc
from shared.events import SignUpChanged, new_event
from shared.query import order_key
from shared.store import is_duplicate_key

#: The reasons a cancel gives (sign-up-changed), by who asked.
BY_MEMBER, BY_ORGANISER = "cancelled-by-member", "cancelled-by-organiser"


@dataclass(frozen=True)
class SignUpResult:
    signup: Doc
    #: Place on the waitlist (1 is next), when waitlisted.
    position: int | None
    #: False when the member was signed up already (this answers the stored sign-up).
    created: bool


class SignUps:
    def __init__(
        self,
        store: ActivitiesStore,
        ledger: Ledger,
        unit_of_work: Callable[[], ActivitiesUnitOfWork],
        clock: Clock,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.unit_of_work = unit_of_work
        self.clock = clock

    async def sign_up(
        self,
        activity_id: str,
        shift_id: str,
        member_id: str,
        signup_id: str,
        now: datetime | None = None,
    ) -> SignUpResult:
        now = now or self.clock()
        domain.active_member(await self.store.member(member_id), member_id)
        activity = await self.store.activity(activity_id)
        if activity is None:
            raise NotFound("activity", activity_id)
        shift = domain.shift_of(activity, shift_id)
        existing = await self.store.signup_of(shift_id, member_id)
        if existing is not None and existing["status"] != "cancelled":
            return await self._existing(existing, now)
        domain.open_for_sign_up(activity, shift, now)
        times = (int(shift["starts_ms"]), int(shift["ends_ms"]))
        other = await self._overlap(member_id, shift_id, times, None)
        if other is not None:
            raise domain.overlap_refusal(other)
        pending = await self._reserve(
            existing, activity_id, shift_id, member_id, signup_id, times, now
        )
        if pending is None:  # a twin request was first
            twin = await self.store.signup_of(shift_id, member_id)
            if twin is None:
                raise Conflict("retry", "the sign-up changed meanwhile; retry")
            return await self._existing(twin, now)
        other = await self._overlap(member_id, shift_id, times, pending)
        if other is not None:
            await self._withdraw(pending)
            raise domain.overlap_refusal(other)
        try:
            claimed = await self.ledger.claim(pending, now)
        except Conflict:
            await self._withdraw(pending)
            raise
        return SignUpResult(claimed.signup, claimed.position, created=True)

    async def _existing(self, signup: Doc, now: datetime) -> SignUpResult:
        if signup["status"] == "pending":
            claimed = await self.drive(signup, now)
            return SignUpResult(claimed.signup, claimed.position, created=False)
        return SignUpResult(signup, await self.ledger.position(signup), created=False)

    async def _overlap(
        self, member_id: str, shift_id: str, times: tuple[int, int], mine: Doc | None
    ) -> Doc | None:
        """The member's other live sign-up overlapping `times`. After `mine` is written, only
        one that is settled or was written before it counts: of two concurrent sign-ups for
        overlapping shifts exactly the later one is refused."""
        others = await self.store.live_signups_of(member_id, times[0])
        if mine is not None:
            me = (int(mine["created_ms"]), mine["_id"])
            others = [
                o
                for o in others
                if o["_id"] != mine["_id"]
                and (o["status"] != "pending" or (int(o["created_ms"]), o["_id"]) < me)
            ]
        return domain.overlapping(shift_id, times, others)

    async def _reserve(
        self,
        existing: Doc | None,
        activity_id: str,
        shift_id: str,
        member_id: str,
        signup_id: str,
        times: tuple[int, int],
        now: datetime,
    ) -> Doc | None:
        """The pending sign-up: a new document, or the member's cancelled one opened again
        (a new attempt). None when another request took it first."""
        now_ms = epoch_ms(now)
        fresh = {
            "status": "pending",
            "starts_ms": times[0],
            "ends_ms": times[1],
            "live_end_ms": times[1],
            "pending_ms": now_ms,
            "created_ms": now_ms,
        }
        if existing is not None:
            # Reopened, or None: another request was first. Committed here: it decides.
            async with self.unit_of_work() as uow:
                reopened = uow.signups.reopen(existing["_id"], int(existing["attempt"]), fresh)
                return await uow.commit(reopened)
        doc = {
            "_id": signup_id,
            "activity_id": activity_id,
            "shift_id": shift_id,
            "member_id": member_id,
            "attempt": 1,
            "member_key": order_key(now_ms, signup_id),
            **fresh,
        }
        try:
            # A duplicate key means another request was first: committed here to read it.
            async with self.unit_of_work() as uow:
                await uow.commit(uow.signups.insert(doc))
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise
            return None
        return doc

    async def _withdraw(self, pending: Doc) -> None:
        """A pending sign-up that never held anything goes back to what it was: a new one is
        deleted, an opened one cancelled again. No event: it never happened. Made on leaving
        the block, before the refusal that follows is raised."""
        async with self.unit_of_work() as uow:
            uow.signups.withdraw(pending)

    async def drive(self, pending: Doc, now: datetime) -> Claimed:
        """Take a pending sign-up through its claim (a repeat, the sweeper). When its shift
        takes no sign-ups any more, it is withdrawn (no event)."""
        try:
            return await self.ledger.claim(pending, now)
        except Conflict:
            await self._withdraw(pending)
            current = await self.store.signup(pending["_id"])
            return Claimed(current or pending, None)

    async def on_shift(
        self, activity_id: str, shift_id: str, after: str, limit: int
    ) -> tuple[list[Doc], dict[str, Doc], bool]:
        """Everyone on a shift in the order they came (sign-ups and walk-ins), a page after
        the `member_key` given; the members' projections by id (their names); whether more
        follow. What a coordinator's list or check-in page shows."""
        ledger = await self.store.ledger(shift_id, {"activity_id": 1})
        if ledger is None or ledger["activity_id"] != activity_id:
            raise NotFound("shift", shift_id)
        docs = await self.store.signups_of_shift(shift_id, after, limit + 1)
        page = docs[:limit]
        members = await self.store.members_by_id([d["member_id"] for d in page])
        return page, members, len(docs) > limit

    # -- the member's answers --------------------------------------------------------------------

    async def get(self, signup_id: str) -> tuple[Doc, int | None]:
        signup = await self.store.signup(signup_id)
        if signup is None:
            raise NotFound("sign-up", signup_id)
        return signup, await self.ledger.position(signup)

    async def confirm(self, signup: Doc, now: datetime | None = None) -> Doc:
        """ "I'm coming": recorded once, with sign-up-changed `confirmed-by-member`."""
        now = now or self.clock()
        if signup["status"] != "confirmed":
            raise Conflict("not_confirmed", f"the sign-up is {signup['status']}, not confirmed")
        if signup.get("confirmed_ms") is not None:
            return signup
        event = SignUpChanged(
            signup_id=signup["_id"],
            activity_id=signup["activity_id"],
            shift_id=signup["shift_id"],
            member_id=signup["member_id"],
            status="confirmed",
            reason="confirmed-by-member",
        )
        async with self.unit_of_work() as uow:  # committed on leaving, before the read
            uow.signups.confirm_coming(signup["_id"], epoch_ms(now), [new_event(event, time=now)])
        return await self.store.signup(signup["_id"]) or signup

    async def cancel(self, signup: Doc, reason: str, now: datetime | None = None) -> Doc:
        """Cancel a sign-up (sign-up-changed); a freed seat promotes the first waiting."""
        now = now or self.clock()
        status = signup["status"]
        if status == "cancelled":
            return signup
        if status == "walk-in":
            raise Conflict("not_a_sign_up", "a walk-in holds no place to cancel")
        if signup.get("att") is not None:
            raise Conflict("attendance_recorded", "this member's attendance is recorded already")
        if int(signup["ends_ms"]) <= epoch_ms(now):
            raise Conflict("shift_ended", "this shift has ended")
        if status == "pending":
            signup = (await self.drive(signup, now)).signup
        return await self.ledger.cancel(signup, reason, now)
