"""Members' use cases: what a caller asks, decided by the domain, written by a unit of work.

The HTTP routes (api.py, api_import.py, unsubscribe.py) are adapters: they parse a request
into a command, call one method of `MemberUseCases` (reached through the service's context,
context.py), and map the errors below to HTTP. Each method reads through the store, asks the
domain (domain.py) for the new state and the events it raises, and stages both in a unit of
work it opens itself (`async with self.unit_of_work() as uow:`), through the repository that
unit of work owns (`uow.members`, store.py), which never commits. The use case commits:
where its next move depends on a write's outcome (a guarded update that may lose a race, a
duplicate key), with `await uow.commit(step)` there, each such write its own commit; the
rest when it leaves the block, which commits what is still staged and hands the events to
the relay (leaving it with an exception drops that). The order of the writes is the order
staged. The time is the clock's the use cases were given.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from services.members import domain
from services.members.contacts import normalise_contacts
from services.members.import_run import Importer
from services.members.schemas import ImportReport
from services.members.store import (
    CodeTaken,
    ContactTaken,
    MemberStore,
    MembersUnitOfWork,
    StagedUpdate,
)
from services.members.violations import RuleViolation
from shared.clock import Clock
from shared.documents import Doc
from shared.events import CloudEvent, EventData, MemberUpdated, new_event

#: Opens the service's unit of work (app.py: `MembersUnitOfWork` on the runtime's relay).
UnitOfWorkFactory = Callable[[], MembersUnitOfWork]

#: How often a write retries when another write changed the member in between.
WRITE_ATTEMPTS = 5


class MemberNotFound(LookupError):
    """No member has this id (or they were erased)."""

    def __init__(self, member_id: str) -> None:
        super().__init__(member_id)
        self.member_id = member_id


class VersionChanged(Exception):
    """The member is no longer at the version the caller expected (If-Match)."""

    def __init__(self, member_id: str, version: int, expected: int) -> None:
        super().__init__(f"member {member_id} is at version {version}, not {expected}")
        self.member_id, self.version, self.expected = member_id, version, expected


class MemberClosed(Exception):
    """The member has left: their profile can no longer change."""

    def __init__(self, member_id: str) -> None:
        super().__init__(f"member {member_id} has left; the profile is closed")
        self.member_id = member_id


class KeptChanging(Exception):
    """Every attempt lost the race against another write to the member."""


class NoCodeFound(Exception):
    """No free referral code was drawn (23^7 codes: practically never)."""


class RolesNeedAdmin(Exception):
    """Giving these roles needs an API key with `admin`, which the caller lacks."""

    def __init__(self, roles: list[str]) -> None:
        super().__init__(", ".join(roles))
        self.roles = roles


def _now(clock: Clock) -> datetime:
    # MongoDB keeps milliseconds: the answer shows the time exactly as it will be stored.
    now = clock()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _may_give(roles: Iterable[str], already: Iterable[str], may_grant: bool) -> None:
    """Roles are granted, not claimed: coordinator or staff (new to the member) need `admin`."""
    granted = domain.granted_roles(roles, already)
    if granted and not may_grant:
        raise RolesNeedAdmin(granted)


def _envelopes(events: list[EventData], now: datetime) -> list[CloudEvent]:
    """The events of one decision in their envelopes; all follow the first (correlation)."""
    first = new_event(events[0], time=now)
    return [first] + [
        new_event(e, correlation_id=first.correlationid, time=now) for e in events[1:]
    ]


# -- commands --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinCommand:
    """A person asking to join: the profile fields (domain.PROFILE_FIELDS) and the rest."""

    profile: Mapping[str, Any]
    email: str | None
    phone: str | None
    telegram: str | None
    terms: bool
    marketing: bool
    referral_code: str | None = None
    #: The kernel's Idempotency-Key record of the request, when it has one: kept on the
    #: member so that a retry finds them and erasure deletes the record (it holds the answer).
    idempotency_record: str | None = None


@dataclass(frozen=True)
class ImportCommand:
    """One import request: a file's text (or a part of it) and how to read it."""

    text: str
    kind: str
    file_id: str
    welcome: bool
    first_row: int = 1


class MemberUseCases:
    """What a caller may ask of members; each method opens and commits its unit of work."""

    def __init__(
        self,
        store: MemberStore,
        unit_of_work: UnitOfWorkFactory,
        clock: Clock,
        *,
        phone_region: str | None,
        erased: Callable[[str], None] = lambda member_id: None,
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work
        self.clock = clock
        #: The country whose national phone formats are read (None: international only).
        self.phone_region = phone_region
        #: Called with a member whose erasure's events are on their way (the eraser's kick).
        self.erased = erased

    # -- join ----------------------------------------------------------------------------------

    async def join(self, cmd: JoinCommand, *, may_grant: bool) -> Doc:
        """A person joins (member-joined, and referral-made with a code); the new member.

        Raises RolesNeedAdmin, RuleViolation (contacts, code, consent), ContactTaken,
        NoCodeFound.
        """
        store = self.store
        _may_give(cmd.profile["roles"], (), may_grant)
        contacts = normalise_contacts(cmd.email, cmd.phone, cmd.telegram, self.phone_region)
        # Contacts before the code: a sign-up key must not learn whose address owns a code.
        taken = await store.taken_kind(contacts.as_dict())
        if taken is not None:
            return await self._joined_before(cmd.idempotency_record, ContactTaken(taken))
        referrer, code = await self._referrer(cmd.referral_code)
        now = _now(self.clock)
        joined = domain.join(
            str(uuid.uuid4()),
            cmd.profile,
            contacts,
            terms=cmd.terms,
            marketing=cmd.marketing,
            now=now,
            referrer=referrer,
            code=code,
        )
        member, events = joined.member, _envelopes(joined.events, now)
        record = cmd.idempotency_record
        if record:
            member["idempotency_record"] = record
        async with self.unit_of_work() as uow:
            for _attempt in range(WRITE_ATTEMPTS):
                member["referral_code"] = domain.new_referral_code()
                try:
                    await uow.commit(uow.members.insert(member, events))
                    return member
                except DuplicateKeyError as exc:
                    refused = await uow.members.join_refused(member, exc)
                    await uow.commit()  # its entries go first (unless a new code follows)
                    if isinstance(refused, CodeTaken):
                        continue
                    if isinstance(refused, ContactTaken):
                        # ... or a concurrent join won.
                        return await self._joined_before(record, refused)
                    raise refused from exc
        raise NoCodeFound()

    async def _referrer(self, raw_code: str | None) -> tuple[Doc | None, str]:
        if not raw_code:
            return None, ""
        code = domain.normalise_code(raw_code)
        referrer = await self.store.by_code(code) if domain.is_well_formed_code(code) else None
        if referrer is None:
            raise RuleViolation("unknown_referral_code", f"referral code {raw_code!r} is unknown")
        return referrer, code

    async def _joined_before(self, record: str | None, taken: ContactTaken) -> Doc:
        """A join whose contacts are taken: the same request again (its Idempotency-Key taken
        over after the first attempt died before answering) is answered with the member it
        created; anything else is the conflict."""
        if record and (done := await self.store.by_idempotency_record(record)):
            return done
        raise taken

    # -- change --------------------------------------------------------------------------------

    async def change_profile(
        self,
        member_id: str,
        requested: Mapping[str, Any],
        *,
        expected_version: int | None,
        may_grant: bool,
    ) -> Doc:
        """Change the fields sent (member-updated with exactly what changed); the member after.

        Raises RuleViolation, MemberNotFound, VersionChanged, MemberClosed, RolesNeedAdmin,
        ContactTaken, KeptChanging.
        """
        store = self.store
        normal = domain.normalise_change(requested, self.phone_region)
        async with self.unit_of_work() as uow:
            for _attempt in range(WRITE_ATTEMPTS):
                doc = await store.get(member_id)
                if doc is None:
                    raise MemberNotFound(member_id)
                version = int(doc.get("version", 1))
                if expected_version is not None and expected_version != version:
                    raise VersionChanged(member_id, version, expected_version)
                if doc.get("status") != "active":
                    raise MemberClosed(member_id)
                if "roles" in normal:
                    _may_give(normal["roles"], doc.get("roles") or (), may_grant)
                change = domain.profile_change(doc, normal, _now(self.clock))
                if not change:
                    return doc  # nothing changes: no event, no new version
                event = new_event(MemberUpdated(member_id=member_id, changes=change.changes))
                staged = uow.members.update(
                    member_id,
                    version,
                    change.set_fields,
                    [event],
                    unset=change.unset_fields,
                    current=doc,
                )
                if await self._landed(uow, staged):
                    await uow.commit()  # the member is read back: what followed it first
                    return await store.get(member_id) or doc
        raise KeptChanging()

    async def _landed(self, uow: MembersUnitOfWork, staged: StagedUpdate) -> bool:
        """Commit a member's guarded update (the next move depends on it) and say whether it
        landed; if it did, the listing entries it made stale are staged to go after it. A
        unique index refusing it raises ContactTaken (or the error)."""
        try:
            result = await uow.commit(staged.step)
        except DuplicateKeyError as exc:
            raise await self.store.refusal(staged.member, exc) from exc
        if result.matched_count != 1:
            return False
        uow.members.remove_entries(staged.obsolete)
        return True

    # -- leave ---------------------------------------------------------------------------------

    async def leave(self, member_id: str, erase: bool) -> None:
        """Leave (member-left); with `erase` the profile becomes an anonymous tombstone, and
        once its events are on their way (the unit of work committed) `erased(member_id)`
        starts the purge of the stream.

        Repeats change nothing (no event). Raises MemberNotFound, KeptChanging.
        """
        store = self.store
        async with self.unit_of_work() as uow:
            for _attempt in range(WRITE_ATTEMPTS):
                doc = await store.get_whole(member_id)
                if doc is None:
                    raise MemberNotFound(member_id)
                now = _now(self.clock)
                left = domain.leaving(doc, erase, now)
                if left is None:
                    return
                event = new_event(left, time=now)
                if erase:
                    swapped = await uow.commit(uow.members.replace_with_tombstone(doc, now, event))
                    written = swapped is not None and swapped.matched_count == 1
                    if written:
                        uow.members.forget(doc)  # committed on leaving the block
                else:
                    written = await self._landed(
                        uow,
                        uow.members.update(
                            member_id,
                            int(doc.get("version", 1)),
                            {"status": "left", "departure": domain.departure(now)},
                            [event],
                            current=doc,
                        ),
                    )
                if written:
                    break
            else:
                raise KeptChanging()
        if erase:
            self.erased(member_id)  # the purge waits for these events: published first

    # -- import --------------------------------------------------------------------------------

    async def import_members(self, cmd: ImportCommand, *, may_grant: bool) -> ImportReport:
        """Bring in an existing volunteer base: each row joins as a join would (or is counted
        as existing, or rejected with why). Raises importer.ImportRefused for the whole
        request. The unit of work is committed after each chunk (import_run.py)."""
        async with self.unit_of_work() as uow:
            work = Importer(self.store, uow, self.phone_region, self.clock, may_grant=may_grant)
            return await work.run(
                cmd.text,
                cmd.kind,
                file_id=cmd.file_id,
                welcome=cmd.welcome,
                first_row=cmd.first_row,
            )

    # -- unsubscribe ---------------------------------------------------------------------------

    async def withdraw_marketing(self, member_id: str) -> None:
        """A member used the unsubscribe link of a marketing e-mail: their marketing consent is
        withdrawn exactly as `PATCH {"consent": {"marketing": false}}` withdraws it
        (member-updated with the changed consent; nothing when it was already withdrawn).

        A member who never existed, has left or was erased is no error: whoever holds a link
        must not learn from the answer which of these it is. Raises KeptChanging.
        """
        try:
            await self.change_profile(
                member_id,
                {"consent": {"marketing": False}},
                expected_version=None,
                may_grant=False,
            )
        except (MemberNotFound, MemberClosed):
            return
