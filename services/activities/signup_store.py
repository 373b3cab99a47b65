"""The sign-ups' repository: the writes of the sign-ups (`signups`), `uow.signups`.

The service's unit of work owns it (`ActivitiesUnitOfWork`, store.py). Each method stages one
write (an insert, a guarded update carrying the member's events, a bulk write) in that unit of
work and returns its `Step`, or nothing when nobody reads its outcome; it writes nothing. The
use case commits: where the outcome decides its next move (a duplicate key, a guard that lost a
race), right there; else on leaving its block, before it reads what it wrote. The one write
made at once, an erasure's dropping of waiting events, is not staged: it stays on the store
(`ActivitiesStore.drop_pending_events`, the kernel's helper).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo.results import BulkWriteResult, UpdateResult

from shared.documents import Doc
from shared.events import CloudEvent
from shared.outbox_layout import FORGET_DEAD_EVENTS
from shared.query import where
from shared.uow import Repository, Step, UnitOfWork, Write

if TYPE_CHECKING:
    from services.activities.store import ActivitiesStore


class SignupRepository(Repository):
    """The staged writes of the `signups` collection, in the unit of work that owns it."""

    def __init__(self, uow: UnitOfWork, store: ActivitiesStore) -> None:
        super().__init__(uow)
        self.store = store

    # -- a sign-up's life (usecases/signups.py, ledger.py) --------------------------------------

    def insert(self, signup: Doc) -> Step[None]:
        """Stage a new sign-up, pending or a walk-in (a duplicate key at commit: the member's
        sign-up for the shift was written by another request)."""
        return self.uow.insert(self.store.signups, signup)

    def reopen(self, signup_id: str, attempt: int, fresh: Doc) -> Step[Doc | None]:
        """Stage the reopening of a cancelled sign-up as pending (`fresh`), attempt + 1.
        Outcome: the sign-up after, None when another request reopened it first."""
        return self.uow.find_one_and_update(
            self.store.signups,
            where({"_id": signup_id, "status": "cancelled", "attempt": attempt}),
            {
                "$set": {**fresh, "attempt": attempt + 1},
                "$unset": {"reason": "", "cancelled_ms": "", "ticket": "", "confirmed_ms": ""},
            },
        )

    def withdraw(self, pending: Doc) -> None:
        """Stage the withdrawal of a pending sign-up that never held anything (no event: it
        never happened): a new one is deleted, a reopened one cancelled again."""
        k = int(pending["attempt"])
        guard = where({"_id": pending["_id"], "status": "pending", "attempt": k})
        if k == 1:
            self.uow.delete(self.store.signups, guard)
        else:
            self.uow.update(
                self.store.signups,
                guard,
                {"$set": {"status": "cancelled"}, "$unset": {"pending_ms": "", "live_end_ms": ""}},
            )

    def follow_mark(
        self,
        signup_id: str,
        mark: Doc,
        changes: Doc,
        unset: Doc,
        events: list[CloudEvent],
    ) -> Step[UpdateResult]:
        """Stage a sign-up's move to the state its ledger mark names, with its events: only
        from the mark's attempt and the states it may come from."""
        guard = {"_id": signup_id, "attempt": int(mark["k"]), "status": {"$in": list(mark["from"])}}
        return self.uow.update(
            self.store.signups, where(guard), {"$set": changes, "$unset": unset}, events
        )

    def confirm_coming(self, signup_id: str, now_ms: int, events: list[CloudEvent]) -> None:
        """Stage "I'm coming" of a confirmed sign-up, once."""
        guard = where({"_id": signup_id, "status": "confirmed", "confirmed_ms": {"$exists": False}})
        self.uow.update(self.store.signups, guard, {"$set": {"confirmed_ms": now_ms}}, events)

    def cancel_pending(self, signup_id: str) -> None:
        """Stage the cancel of a sign-up still pending (its member left; no event)."""
        self.uow.update(
            self.store.signups,
            where({"_id": signup_id, "status": "pending"}),
            {"$set": {"status": "cancelled"}, "$unset": {"live_end_ms": "", "pending_ms": ""}},
        )

    def move(self, shift_id: str, starts_ms: int, ends_ms: int) -> None:
        """Stage the sign-ups' copies of their moved shift's times (the overlap check's, the
        listings'), the live ones' end too."""
        times = {"starts_ms": starts_ms, "ends_ms": ends_ms}
        self.uow.update_many(self.store.signups, where(shift_id=shift_id), {"$set": times})
        live = where(shift_id=shift_id, live_end_ms={"$gt": 0})
        self.uow.update_many(self.store.signups, live, {"$set": {"live_end_ms": ends_ms}})

    # -- attendance (usecases/attendance.py, tally.py) ----------------------------------------

    def mark_present(self, signup_id: str, fields: Doc) -> None:
        """Stage a check-in (`fields`) of a sign-up whose attendance is not recorded yet."""
        guard = where({"_id": signup_id, "att": {"$exists": False}})
        self.uow.update(self.store.signups, guard, {"$set": fields})

    def mark_attended(self, signup_id: str, fields: Doc, events: list[CloudEvent]) -> None:
        """Stage present → attended (`fields`) with its `attended` event, once."""
        guard = where({"_id": signup_id, "att": "present"})
        self.uow.update(self.store.signups, guard, {"$set": fields}, events)

    def mark_no_shows(
        self, no_shows: list[tuple[Doc, CloudEvent]], now_ms: int
    ) -> Step[BulkWriteResult | None]:
        """Stage one bulk write making confirmed sign-ups not checked in no-shows, each with
        its event (each guarded: one that checked in meanwhile is left alone)."""
        writes = [
            Write.update(
                s["_id"],
                where({"_id": s["_id"], "status": "confirmed", "att": {"$exists": False}}),
                {"$set": {"att": "no-show", "uncounted_ms": now_ms}},
                [event],
            )
            for s, event in no_shows
        ]
        return self.uow.bulk(self.store.signups, writes)

    def clear_uncounted(self, counted: list[Doc]) -> Step[BulkWriteResult | None]:
        """Stage one unordered bulk write removing `uncounted_ms` from sign-ups whose figures
        are in, each guarded by the value and the attendance it was counted for."""
        writes = [
            Write.update(
                s["_id"],
                where(
                    {"_id": s["_id"], "uncounted_ms": int(s["uncounted_ms"]), "att": s.get("att")}
                ),
                {"$unset": {"uncounted_ms": ""}},
            )
            for s in counted
        ]
        return self.uow.bulk(self.store.signups, writes)

    # -- erasure (usecases/members.py) -------------------------------------------------------

    def anonymise(self, signup_id: str, member_id: str, token: Any) -> None:
        """Stage a sign-up of an erased member carrying `token` instead of their id, without
        the events set aside as unpublishable."""
        self.uow.update(
            self.store.signups,
            where({"_id": signup_id, "member_id": member_id}),
            {"$set": {"member_id": token}, "$unset": FORGET_DEAD_EVENTS},
        )
