"""The ledgers' repository: the writes of the shifts' ledgers (`shifts`), `uow.ledgers`.

The service's unit of work owns it (`ActivitiesUnitOfWork`, store.py). Each method stages one
guarded update (or insert, or bulk write) of ledger documents in that unit of work and returns
its `Step`; it writes nothing. The use case commits, where the outcome decides its next move:
every seat transition is its own commit, in the order docs/activities.md, "No overbooking",
walks through (the ledger decides first, the sign-up follows). The ledgers raise no event: what
members are told rides on their sign-ups.

A write that reads the ledger back (`claim_seat`, `join_queue`, `draw_ticket`) leaves out the
rosters and the outbox fields (an exclusion projection: the unit of work adds the outbox's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymongo.results import BulkWriteResult, UpdateResult

from shared.documents import Doc
from shared.query import where
from shared.uow import Repository, Step, UnitOfWork, Write

if TYPE_CHECKING:
    from services.activities.store import ActivitiesStore

#: A ledger read without its rosters and markers: what a page or a report needs.
LEDGER_FIGURES = {"seats": 0, "queue": 0, "unsettled": 0, "counted": 0}


def _absent(signup_id: str) -> Doc:
    return {
        f"seats.{signup_id}": {"$exists": False},
        f"queue.{signup_id}": {"$exists": False},
        f"unsettled.{signup_id}": {"$exists": False},
    }


class LedgerRepository(Repository):
    """The staged writes of the `shifts` collection, in the unit of work that owns it."""

    def __init__(self, uow: UnitOfWork, store: ActivitiesStore) -> None:
        super().__init__(uow)
        self.store = store

    # -- seats: claim, give back, promote, settle (usecases/ledger.py) --------------------------

    def claim_seat(
        self, shift_id: str, signup_id: str, attempt: int, mark: Doc
    ) -> Step[Doc | None]:
        """Stage the claim of a free seat of an open shift for a sign-up in neither list nor
        marked, leaving its mark. Outcome: the ledger before (its figures), None if no match."""
        su = signup_id
        return self.uow.find_one_and_update(
            self.store.shifts,
            where({"_id": shift_id, "status": "published", **_absent(su), "free": {"$gt": 0}}),
            {
                "$set": {f"seats.{su}": attempt, f"unsettled.{su}": mark},
                "$inc": {"free": -1, "confirmed": 1, "unsettled_n": 1},
            },
            projection=LEDGER_FIGURES,
            after=False,
        )

    def join_queue(
        self, shift_id: str, signup_id: str, attempt: int, mark: Doc, longest: int
    ) -> Step[Doc | None]:
        """Stage a place at the end of an open shift's waitlist (shorter than `longest`).
        Outcome: the ledger after (its `waitlisted` is the position, `wait_seq` the ticket),
        None if no match."""
        su = signup_id
        return self.uow.find_one_and_update(
            self.store.shifts,
            where(
                {
                    "_id": shift_id,
                    "status": "published",
                    **_absent(su),
                    "waitlisted": {"$lt": longest},
                }
            ),
            {
                "$set": {f"queue.{su}": attempt, f"unsettled.{su}": mark},
                "$inc": {"waitlisted": 1, "wait_seq": 1, "unsettled_n": 1},
            },
            projection=LEDGER_FIGURES,
        )

    def give_back(
        self, shift_id: str, signup_id: str, attempt: int, held: str, mark: Doc
    ) -> Step[UpdateResult]:
        """Stage the return of a confirmed (`held`) sign-up's seat or a waitlisted one's place,
        unless a transition of it is unsettled (then nothing matches)."""
        su = signup_id
        roster, counter = ("seats", "confirmed") if held == "confirmed" else ("queue", "waitlisted")
        inc = {counter: -1, "unsettled_n": 1, **({"free": 1} if held == "confirmed" else {})}
        return self.uow.update(
            self.store.shifts,
            where(
                {"_id": shift_id, f"{roster}.{su}": attempt, f"unsettled.{su}": {"$exists": False}}
            ),
            {"$unset": {f"{roster}.{su}": ""}, "$set": {f"unsettled.{su}": mark}, "$inc": inc},
        )

    def promote_seat(
        self, shift_id: str, signup_id: str, attempt: int, mark: Doc
    ) -> Step[UpdateResult]:
        """Stage a waitlisted sign-up's move to a free seat of an open shift."""
        su = signup_id
        return self.uow.update(
            self.store.shifts,
            where(
                {
                    "_id": shift_id,
                    "status": "published",
                    "free": {"$gt": 0},
                    f"queue.{su}": attempt,
                    f"unsettled.{su}": {"$exists": False},
                }
            ),
            {
                "$unset": {f"queue.{su}": ""},
                "$set": {f"seats.{su}": attempt, f"unsettled.{su}": mark},
                "$inc": {"free": -1, "confirmed": 1, "waitlisted": -1, "unsettled_n": 1},
            },
        )

    def draw_ticket(self, shift_id: str) -> Step[Doc | None]:
        """Stage the draw of the next waitlist ticket; outcome: the ledger after (`wait_seq`)."""
        return self.uow.find_one_and_update(
            self.store.shifts,
            {"_id": shift_id},
            {"$inc": {"wait_seq": 1}},
            projection=LEDGER_FIGURES,
        )

    def clear_mark(self, shift_id: str, signup_id: str, op: str) -> Step[UpdateResult]:
        """Stage the removal of the sign-up's mark `op` (settled)."""
        return self.uow.update(
            self.store.shifts,
            where({"_id": shift_id, f"unsettled.{signup_id}.op": op}),
            {"$unset": {f"unsettled.{signup_id}": ""}, "$inc": {"unsettled_n": -1}},
        )

    def undo_mark(
        self, shift_id: str, signup_id: str, op: str, taken: tuple[str, int] | None
    ) -> Step[UpdateResult]:
        """Stage the removal of mark `op` whose sign-up did not follow, giving back in the same
        update what it took: `taken` is (the roster, the attempt) still held there, if any."""
        guard: Doc = {"_id": shift_id, f"unsettled.{signup_id}.op": op}
        update: Doc = {"$unset": {f"unsettled.{signup_id}": ""}, "$inc": {"unsettled_n": -1}}
        if taken is not None:
            held, k = taken
            guard[f"{held}.{signup_id}"] = k
            update["$unset"][f"{held}.{signup_id}"] = ""
            counter = {"free": 1, "confirmed": -1} if held == "seats" else {"waitlisted": -1}
            update["$inc"].update(counter)
        return self.uow.update(self.store.shifts, where(guard), update)

    # -- definitions: create, capacity cuts, sync, close (usecases/planning.py, attendance.py) ---

    def insert(self, ledger: Doc) -> Step[None]:
        """Stage a new shift's ledger (a duplicate key at commit: made before, or its check-in
        code is another shift's)."""
        return self.uow.insert(self.store.shifts, ledger)

    def reserve_cut(
        self, shift_id: str, was: int, capacity: int, now_ms: int
    ) -> Step[UpdateResult]:
        """Stage a capacity cut from `was` to `capacity`, matched only while as many seats are
        free; the ledger is then due a sync."""
        cut = was - capacity
        return self.uow.update(
            self.store.shifts,
            where({"_id": shift_id, "capacity": was, "free": {"$gte": cut}}),
            {"$set": {"capacity": capacity, "sync_due_ms": now_ms}, "$inc": {"free": -cut}},
        )

    def sync(
        self,
        shift_id: str,
        was: int,
        version: int,
        changes: Doc,
        *,
        cut: bool,
        drop_due: bool,
    ) -> Step[UpdateResult]:
        """Stage a ledger's copy of its definition (`changes`, its `capacity` included) at
        `version`, from capacity `was`, never over a newer one; a `cut` only while the seats
        it removes are free. `drop_due`: the ledger is not closed any more (cancelled)."""
        capacity = int(changes["capacity"])
        guard: Doc = {"_id": shift_id, "capacity": was, "def_version": {"$lte": version}}
        if cut:
            guard["free"] = {"$gte": was - capacity}
        update: Doc = {
            "$set": changes,
            "$inc": {"free": capacity - was},
            "$unset": {"sync_due_ms": ""},
        }
        if drop_due:
            update["$unset"]["due_ms"] = ""
        return self.uow.update(self.store.shifts, where(guard), update)

    def close(self, shift_id: str, due_ms: int, now_ms: int) -> Step[UpdateResult]:
        """Stage a shift's close (its attendance then refused), once: guarded by its `due_ms`."""
        return self.uow.update(
            self.store.shifts,
            where({"_id": shift_id, "due_ms": due_ms}),
            {"$unset": {"due_ms": ""}, "$set": {"closed_ms": now_ms}},
        )

    # -- figures (usecases/tally.py) -----------------------------------------------------------

    def count_figures(self, figures: list[tuple[str, str, Doc]]) -> Step[BulkWriteResult | None]:
        """Stage one unordered bulk write of figures, each (shift, marker, increments) moved
        only if its marker (`counted.<signup id>:<kind>`) is not there yet, setting it."""
        writes = [
            Write.update(
                sid,
                where({"_id": sid, f"counted.{marker}": {"$exists": False}}),
                {"$inc": increments, "$set": {f"counted.{marker}": 1}},
            )
            for sid, marker, increments in figures
        ]
        return self.uow.bulk(self.store.shifts, writes)
