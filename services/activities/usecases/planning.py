"""An activity's life as the organisers shape it: create, change, publish, cancel.

The activity document holds the definition (its shifts' role, times and capacity) and carries
the events about it; each shift's ledger copies what it needs of it (capacity, times, status)
and is brought up to date by `sync`, guarded by the definition's version so a late sync never
undoes a newer one. A capacity cut is the one change the ledger may refuse (seats are taken):
it is reserved in the ledger first (`free >= cut`, one conditional update), so a PATCH that
would leave more confirmed members than seats is refused (409) before anything changes. An
activity whose ledgers are not synced yet carries `sync_due_ms`; the sweeper finishes a sync a
crash interrupted (cancelling every sign-up of a cancelled activity, promoting into new seats).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from services.activities import domain
from services.activities.domain import Conflict, NotFound
from services.activities.store import ActivitiesStore, ActivitiesUnitOfWork
from services.activities.usecases.ledger import Ledger
from shared.clock import Clock, epoch_ms
from shared.documents import Doc
from shared.events import ActivityCancelled, ActivityChanged, CloudEvent, new_event
from shared.query import order_key
from shared.store import is_duplicate_key

log = logging.getLogger("sarafan.activities")

#: Namespace of shift ids derived from their activity's id (a retried create makes the same).
_SHIFTS = uuid.UUID("7c1d0e52-3b8a-4f6e-9d21-5a0c4b7e8f13")
#: Tries of a PATCH that lost a race with another change of the same activity.
TRIES = 3
SYNC_FIELDS = ("role", "starts_ms", "ends_ms", "capacity")


def shift_ids(activity_id: str, n: int) -> list[str]:
    return [f"s_{uuid.uuid5(_SHIFTS, f'{activity_id}:{i}').hex}" for i in range(n)]


class Planning:
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

    async def _get(self, activity_id: str) -> Doc:
        activity = await self.store.activity(activity_id)
        if activity is None:
            raise NotFound("activity", activity_id)
        return activity

    # -- create ---------------------------------------------------------------------------------

    async def create(
        self,
        activity_id: str,
        fields: Doc,
        shifts: list[domain.ShiftTimes],
        status: str,
        now: datetime | None = None,
    ) -> Doc:
        """Store a new activity (draft or published, with activity-published), its shifts'
        ledgers first: a crash between leaves ledgers nobody reaches, and a retry (the same
        Idempotency-Key, so the same ids) finds them."""
        now = now or self.clock()
        ids = shift_ids(activity_id, len(shifts))
        doc = domain.new_activity(
            activity_id, fields, dict(zip(ids, shifts, strict=True)), status, now
        )
        # Where it sorts in the list (the store's key: first start, then id).
        doc["list_key"] = order_key(doc["starts_ms"], activity_id)
        events = [new_event(domain.published(doc), time=now)] if status == "published" else []
        for sid in ids:
            await self._insert_ledger(doc, sid)
        try:
            # A duplicate key means made before (a retry): committed here to read that outcome.
            async with self.unit_of_work() as uow:
                await uow.commit(uow.activities.insert(doc, events))
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise
            return await self._get(activity_id)
        return doc

    async def _insert_ledger(self, activity: Doc, shift_id: str) -> None:
        for _ in range(10):
            ledger = domain.new_ledger(activity, shift_id, domain.new_code())
            try:
                # A duplicate key decides (made before, or the code drawn is taken): its own commit.
                async with self.unit_of_work() as uow:
                    await uow.commit(uow.ledgers.insert(ledger))
                return
            except Exception as exc:
                if not is_duplicate_key(exc):
                    raise
                if await self.store.ledger(shift_id, {"_id": 1}) is not None:
                    return  # made by the first attempt of this create
                # Another shift drew the same code: draw again.
        raise RuntimeError("no free check-in code after 10 draws")

    # -- change ---------------------------------------------------------------------------------

    async def change(
        self,
        activity_id: str,
        fields: Doc,
        shifts: list[domain.ShiftChange],
        status: str | None,
        now: datetime | None = None,
    ) -> Doc:
        """Apply a PATCH: activity-changed with the new values (or activity-published for a
        draft published now); 409 when a capacity would go below the confirmed members."""
        now = now or self.clock()
        for _ in range(TRIES):
            activity = await self._get(activity_id)
            change = domain.change(activity, fields, shifts, status, now)
            if change.empty:
                return activity
            await self._reserve_cuts(activity, change, now)
            after = await self._write_change(activity, change, now)
            await self.sync(activity_id, now)
            if after is not None:
                return after
            # Another change of the activity came first: read it again and redo this one.
        raise Conflict("concurrent_change", f"activity {activity_id} kept changing; retry")

    async def _reserve_cuts(self, activity: Doc, change: domain.Change, now: datetime) -> None:
        for sid, new in change.shifts.items():
            old, capacity = int(activity["shifts"][sid]["capacity"]), int(new["capacity"])
            if capacity >= old:
                continue
            async with self.unit_of_work() as uow:  # reserved, or refused: it decides
                reserved = uow.ledgers.reserve_cut(sid, old, capacity, epoch_ms(now))
                done = await uow.commit(reserved)
            if done.modified_count:
                continue
            ledger = await self.store.ledger(sid, {"confirmed": 1, "capacity": 1})
            await self.sync(activity["_id"], now)  # gives back what this PATCH reserved
            confirmed = int((ledger or {}).get("confirmed") or 0)
            raise Conflict(
                "capacity_below_confirmed",
                f"shift {sid} has {confirmed} confirmed member(s): its capacity cannot go "
                f"below {confirmed}",
                {"shift_id": sid, "confirmed": confirmed},
            )

    async def _write_change(
        self, activity: Doc, change: domain.Change, now: datetime
    ) -> Doc | None:
        version = int(activity["version"])
        after = {**activity, **change.fields}
        after["shifts"] = {**activity["shifts"], **change.shifts}
        starts_ms, ends_ms = domain.span(after["shifts"])
        now_ms = epoch_ms(now)
        fields = {
            **change.fields,
            "starts_ms": starts_ms,
            "ends_ms": ends_ms,
            "list_key": order_key(starts_ms, activity["_id"]),
            "version": version + 1,
            "sync_due_ms": now_ms,
        }
        fields.update({f"shifts.{sid}": d for sid, d in change.shifts.items()})
        events: list[CloudEvent] = []
        if change.publishes:
            fields.update(status="published", published_ms=now_ms)
            after.update(status="published")
            events.append(new_event(domain.published(after), time=now))
        elif activity["status"] == "published" and change.changes:
            changed = ActivityChanged(activity_id=activity["_id"], changes=change.changes)
            events.append(new_event(changed, time=now))
        async with self.unit_of_work() as uow:
            # The version check decides (None: another change came first, redo this one).
            written = uow.activities.change(activity["_id"], version, fields, events)
            return await uow.commit(written)

    async def cancel(self, activity_id: str, reason: str, now: datetime | None = None) -> Doc:
        """Cancel (activity-cancelled when it was published); every sign-up is cancelled with
        sign-up-changed `activity-cancelled`. Cancelling again changes nothing."""
        now = now or self.clock()
        activity = await self._get(activity_id)
        if activity["status"] == "cancelled":
            return activity
        events = []
        if activity["status"] == "published":
            cancelled = ActivityCancelled(activity_id=activity_id, reason=reason)
            events.append(new_event(cancelled, time=now))
        now_ms = epoch_ms(now)
        fields = {
            "status": "cancelled",
            "cancelled_ms": now_ms,
            "cancel_reason": reason,
            "sync_due_ms": now_ms,
        }
        async with self.unit_of_work() as uow:  # both made on leaving, in this order
            uow.activities.cancel(activity_id, activity["status"], fields, events)
            uow.links.revoke(activity_id)  # its check-in link
        await self.sync(activity_id, now)
        return await self._get(activity_id)

    # -- sync -----------------------------------------------------------------------------------

    async def sync(self, activity_id: str, now: datetime) -> None:
        """Bring every ledger (and its sign-ups' copies of the times) to the definition, then
        cancel the sign-ups of a cancelled activity or promote into new seats; idempotent."""
        activity = await self.store.activity(activity_id)
        if activity is None:
            return
        for sid in activity.get("shifts") or {}:
            await self._sync_ledger(activity, sid, now)
        async with self.unit_of_work() as uow:
            uow.activities.synced(activity_id, int(activity["version"]))

    async def _sync_ledger(self, activity: Doc, sid: str, now: datetime) -> None:
        ledger = await self.store.ledger(sid, {"seats": 0, "queue": 0, "counted": 0})
        if ledger is None:
            await self._insert_ledger(activity, sid)  # a create that died between its writes
            ledger = await self.store.ledger(sid, {"seats": 0, "queue": 0, "counted": 0}) or {}
        definition, version = activity["shifts"][sid], int(activity["version"])
        target = {k: definition[k] for k in SYNC_FIELDS} | {"status": activity["status"]}
        if (
            all(ledger.get(k) == v for k, v in target.items())
            and ledger.get("def_version") == version
        ):
            await self._after_sync(activity, sid, ledger, now)
            return
        changes = {**target, "def_version": version}
        capacity, old = int(target["capacity"]), int(ledger["capacity"])
        if capacity < old:
            # Seats taken since: shrink only as far as the confirmed members allow.
            changes["capacity"] = max(capacity, int(ledger["confirmed"]))
        cancelled = activity["status"] == "cancelled"
        if ledger.get("due_ms") is not None and not cancelled:
            changes["due_ms"] = int(target["ends_ms"])
        moved = (ledger["starts_ms"], ledger["ends_ms"]) != (target["starts_ms"], target["ends_ms"])
        async with self.unit_of_work() as uow:
            # The ledger's version guard decides; the sign-ups' copies of its times follow, made
            # on leaving the block, before the promotions or cancels below.
            synced = uow.ledgers.sync(
                sid, old, version, changes, cut=capacity < old, drop_due=cancelled
            )
            if not (await uow.commit(synced)).modified_count:
                log.info("ledger %s changed meanwhile; the sweeper syncs it again", sid)
                return
            if moved:
                uow.signups.move(sid, int(target["starts_ms"]), int(target["ends_ms"]))
        await self._after_sync(activity, sid, {**ledger, **changes}, now)

    async def _after_sync(self, activity: Doc, sid: str, ledger: Doc, now: datetime) -> None:
        if activity["status"] == "cancelled":
            await self._cancel_all(sid, now)
        elif activity["status"] == "published":
            await self.ledger.promote(sid, now)

    async def _cancel_all(self, sid: str, now: datetime) -> None:
        """Every sign-up holding a place on a cancelled activity's shift is cancelled."""
        await self.ledger.settle_all(sid, now, None)
        roster = await self.store.ledger(sid, {"seats": 1, "queue": 1}) or {}
        ids = [*(roster.get("seats") or {}), *(roster.get("queue") or {})]
        for signup in (await self.store.signups_by_id(ids)).values():
            await self.ledger.cancel(signup, "activity-cancelled", now)
