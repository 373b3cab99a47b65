"""Engagement's use cases: what the HTTP routes and the event handlers ask the service to do.

Each function reads what it needs through the store, applies the rules (contributions.py for
what members write, domain.py for scores and levels) and writes the new state with the events
it raises through its unit of work, which publishes them once it is committed. Routes and
handlers are adapters around these: they parse, call one, and map a refusal (`Refused`,
`NotFound` of contributions.py) to an HTTP error or let a failure reach the bus.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from services.engagement import attendance, counted, domain, erasure
from services.engagement import contributions as rules
from services.engagement.contributions import Answer
from services.engagement.scoring import Copy, Scoring, derived_event_id
from services.engagement.standings import cohort
from services.engagement.store import RANK_FIELDS, EngagementStore
from shared.clock import epoch_ms, utcnow
from shared.documents import Doc
from shared.events import (
    Attended,
    CloudEvent,
    CommentAdded,
    EventData,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    PostKind,
    new_event,
)
from shared.query import Collection
from shared.store import is_duplicate_key
from shared.uow import UnitOfWork

log = logging.getLogger("sarafan.engagement")

Batch = list[tuple[CloudEvent, EventData]]
#: Securely deletes a stream's messages on a subject (the bus's `erase`): their bytes go too.
Erase = Callable[[str, str], Awaitable[object]]


async def _active_member(store: EngagementStore, member_id: str) -> Doc:
    return rules.active_member(await store.member(member_id), member_id)


async def _existing_post(store: EngagementStore, post_id: str) -> Doc:
    return rules.existing_post(await store.post(post_id), post_id)


async def _inserted(uow: UnitOfWork, coll: Collection, doc: Doc, events: list[CloudEvent]) -> bool:
    """Insert a new document with its events; False when its id exists already (the same
    request again, its first answer lost: the id comes from its Idempotency-Key)."""
    try:
        await uow.insert(coll, doc, events)
    except Exception as exc:
        if is_duplicate_key(exc):
            return False
        raise
    return True


# -- what members write --------------------------------------------------------------------------


@dataclass(frozen=True)
class NewPost:
    post_id: str
    author_id: str
    kind: PostKind
    title: str
    body: str
    tags: list[str]


@dataclass(frozen=True)
class Posted:
    post: Doc
    author: Doc
    #: False when the post existed already (the same request again): `post` is the stored one.
    created: bool


async def create_post(
    cmd: NewPost, uow: UnitOfWork, store: EngagementStore, now: datetime
) -> Posted:
    """Publish a post, question, story or event report (post-created)."""
    author = await _active_member(store, cmd.author_id)
    doc, created = rules.new_post(cmd.post_id, author, cmd.kind, cmd.title, cmd.body, cmd.tags, now)
    if not await _inserted(uow, store.posts, doc, [new_event(created, time=now)]):
        stored = await store.post(cmd.post_id)
        if stored is not None:
            return Posted(stored, author, created=False)
    return Posted(doc, author, created=True)


@dataclass(frozen=True)
class NewComment:
    comment_id: str
    post_id: str
    author_id: str
    body: str


async def add_comment(
    cmd: NewComment, uow: UnitOfWork, store: EngagementStore, now: datetime
) -> tuple[Doc, Doc]:
    """Comment on a post (comment-added); the stored comment and its author."""
    post = await _existing_post(store, cmd.post_id)
    author = await _active_member(store, cmd.author_id)
    doc, added = rules.new_comment(cmd.comment_id, post, cmd.author_id, cmd.body, now)
    if not await _inserted(uow, store.comments, doc, [new_event(added, time=now)]):
        doc = await store.comment(cmd.comment_id) or doc
    return doc, author


@dataclass(frozen=True)
class NewReaction:
    post_id: str
    member_id: str
    reaction: str


async def add_reaction(
    cmd: NewReaction,
    uow: UnitOfWork,
    store: EngagementStore,
    now: datetime,
    allowed: Sequence[str] = rules.DEFAULT_REACTIONS,
) -> tuple[Doc, bool]:
    """React to a post with one of the `allowed` reactions, once per member and post
    (reaction-added): the reaction stored, and whether this call made it (the same reaction
    again changes nothing; another is refused)."""
    reaction = rules.allowed_reaction(cmd.reaction, allowed)
    post = await _existing_post(store, cmd.post_id)
    await _active_member(store, cmd.member_id)
    existing = await store.reaction(rules.reaction_id(cmd.post_id, cmd.member_id))
    if existing is not None:
        return rules.same_reaction(existing, reaction), False
    doc, added = rules.new_reaction(post, cmd.member_id, reaction, now)
    if await _inserted(uow, store.reactions, doc, [new_event(added, time=now)]):
        return doc, True
    twin = await store.reaction(doc["_id"])  # a concurrent request won the insert
    assert twin is not None
    return rules.same_reaction(twin, reaction), False


@dataclass(frozen=True)
class AcceptAnswer:
    post_id: str
    comment_id: str
    by: str


async def accept_answer(
    cmd: AcceptAnswer, uow: UnitOfWork, store: EngagementStore, now: datetime
) -> Answer:
    """The asker accepts a comment as the answer to their question, once (answer-accepted)."""
    post = await _existing_post(store, cmd.post_id)
    await _active_member(store, cmd.by)
    comment = await store.comment(cmd.comment_id)
    accepting = rules.accept_answer(post, cmd.comment_id, comment, cmd.by, now)
    if accepting.fields is None or accepting.event is None:
        return accepting.answer  # this answer is accepted already: nothing changes
    event = new_event(accepting.event, time=now)
    if await store.accept_answer(uow, cmd.post_id, accepting.fields, event):
        return accepting.answer
    # Another request accepted an answer in between: the same one is fine, another is not.
    return rules.already_accepted(await store.post(cmd.post_id) or post, accepting.answer)


# -- volunteer hours -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NewHours:
    entry_id: str
    member_id: str
    hours: float
    activity: str
    date: date
    note: str


async def record_hours(
    cmd: NewHours, uow: UnitOfWork, store: EngagementStore, now: datetime
) -> Doc:
    """Record volunteer hours as `pending` (no event until they are approved)."""
    await _active_member(store, cmd.member_id)
    entry = rules.hours_entry(
        cmd.entry_id, cmd.member_id, cmd.hours, cmd.activity, cmd.date, cmd.note, now
    )
    if not await _inserted(uow, store.hours, entry, []):
        entry = await store.hours_entry(cmd.entry_id) or entry
    return entry


@dataclass(frozen=True)
class DecideHours:
    entry_id: str
    by: str
    status: str  # approved | rejected
    reason: str
    #: The Idempotency-Key record that will keep this answer, if the request has a key.
    request_record: str | None = None


async def decide_hours(
    cmd: DecideHours, uow: UnitOfWork, store: EngagementStore, now: datetime
) -> Doc:
    """Approve (hours-approved: they score) or reject pending hours; the entry after it."""
    entry = await store.hours_entry(cmd.entry_id)
    if entry is None:
        raise rules.NotFound("hours entry", cmd.entry_id)
    rules.decider(await _active_member(store, cmd.by), cmd.by, entry["member_id"])
    if cmd.request_record is not None:
        # The kept response will show the member's entry: erasure must find it by the member
        # (noted first, so that it exists whenever the record may; wall-clock time, as the
        # record's own expiry is).
        await store.note_decision_request(cmd.request_record, entry["member_id"], utcnow())
    if entry["status"] == "pending":
        decision, approved = rules.decide_hours(entry, cmd.by, cmd.status, cmd.reason, now)
        events = [new_event(data, time=now) for data in approved]
        if await store.decide_hours(uow, cmd.entry_id, decision, events):
            return {**entry, **decision}
        entry = await store.hours_entry(cmd.entry_id) or entry
    return rules.already_decided(entry, cmd.status)


# -- what the members service says ---------------------------------------------------------------


async def apply_member_events(
    batch: Batch, store: EngagementStore, scoring: Scoring, erase: Erase, now: datetime
) -> None:
    """Member events in their order: counters, projection, erasures, standings' copies, facts."""
    member_ids = {d.member_id for _, d in batch if hasattr(d, "member_id")}
    known = await store.members_by_id(member_ids)
    status = {m: doc.get("status") for m, doc in known.items()}
    referred = {m: bool(doc.get("referred_by")) for m, doc in known.items()}
    # Stamped with the time they are written (not the events' own times): folding relies on it
    # (shared/tally.py).
    written = utcnow()
    deltas = []
    copies: dict[str, Copy] = {}
    erased: list[str] = []
    for _, data in batch:
        member_id = getattr(data, "member_id", None)
        if member_id is None or status.get(member_id) == "erased":
            continue  # a replayed event must not bring an erased member's data back
        if isinstance(data, MemberJoined):
            referred.setdefault(member_id, bool(data.referred_by))
            # An erasure later in this batch takes back this join's count: it needs its time.
            known.setdefault(member_id, {}).setdefault("joined_at_ms", epoch_ms(data.joined_at))
        before = status.get(member_id)
        after, change = domain.counted(before, referred.get(member_id, False), data)
        kind = "joined" if isinstance(data, MemberJoined) else after
        deltas.append(store.counters.delta(f"{member_id}:{kind}", change, written))
        deltas += counted.member_windows(store.counters, data, before, after, known.get(member_id),
                                         written)  # fmt: skip
        status[member_id] = after or status.get(member_id)  # type: ignore[assignment]
        for fields, unset in standing_copies(data):
            copies.setdefault(member_id, Copy()).then(fields, unset)
        if isinstance(data, MemberLeft) and data.erase:
            erased.append(member_id)
    # The counted transitions first: a crash before the projection changes leaves the status as
    # it was, so the retry computes the same deltas (and inserts them once).
    await store.counters.add(deltas)
    await store.projection.apply_many(d for _, d in batch)
    for member_id in erased:
        await forget_member(member_id, store, erase)
    facts: list[domain.Fact] = []
    for event, data in batch:
        facts += domain.facts_from_event(event.id, event.time, data)
    gone = {m for m, s in status.items() if s == "erased"}
    # The standing copies and the facts in one write per member (scoring.py). A fact may name a
    # member this batch does not (a referrer): their status is read there.
    unknown = {f.member_id for f in facts} - set(status)
    gone |= await store.erased_among(unknown) if unknown else set()
    await scoring.record(facts, now, {m: c for m, c in copies.items() if m not in gone}, gone)


def standing_copies(data: EventData) -> list[tuple[dict[str, Any], list[str]]]:
    """What a member's standing copies from a member event (for its indexes)."""
    if isinstance(data, MemberJoined):
        joined = epoch_ms(data.joined_at)
        copied = {"active": 1, "region": data.region, "joined_ms": joined, "cohort": cohort(joined)}
        return [(copied, [])]
    if isinstance(data, MemberUpdated) and "region" in data.changes:
        return [({"region": data.changes["region"]}, [])]
    if isinstance(data, MemberLeft) and not data.erase:
        return [({"active": 0}, list(RANK_FIELDS))]
    return []


async def forget_member(member_id: str, store: EngagementStore, erase: Erase) -> None:
    """Forget an erased member here, and erase what our own stream says about them: the events
    whose subject is their id, and the post-created events of their posts (titles). Erased
    first: a retry after a failure finds the same posts still attributed."""
    post_ids = await erasure.post_ids_of(store, member_id)
    await erasure.drop_post_events(store, post_ids)  # none may be published after the erasure
    await erase("ENGAGEMENT", f"engagement.*.{member_id}")
    for post_id in post_ids:
        await erase("ENGAGEMENT", f"engagement.post-created.{post_id}")
    await erasure.erase_member(store, member_id)
    log.info("erased member %s (%d post(s) anonymised)", member_id, len(post_ids))


# -- what members did ----------------------------------------------------------------------------


async def record_activity(
    batch: Batch, store: EngagementStore, scoring: Scoring, now: datetime
) -> None:
    """A batch of activity events: first answers noted on their questions, then the facts into
    the members' standings."""
    facts: list[domain.Fact] = []
    first_answers: dict[str, int] = {}
    for event, data in batch:
        facts += domain.facts_from_event(event.id, event.time, data)
        if isinstance(data, CommentAdded) and data.author_id != data.post_author_id:
            at = epoch_ms(data.created_at)
            first_answers[data.post_id] = min(at, first_answers.get(data.post_id, at))
    # Counted first (an erased member's hours too: the erasure takes them back either way).
    await store.counters.add(counted.activity_windows(store.counters, batch, utcnow()))
    await store.note_first_answers(first_answers)
    credits = await _referral_credits(facts, store)
    await scoring.record(facts + credits, now)
    # Noted after they are recorded (a crash in between records them again: the same id, so
    # nothing is added twice); a noted friend's later activity needs no look at the referrer.
    await store.note_referrals_counted([c.id.removeprefix("referral:") for c in credits], now)


async def _referral_credits(facts: list[domain.Fact], store: EngagementStore) -> list[domain.Fact]:
    """The referrals the friends' activity in `facts` makes count (domain.referral_credits)."""
    doers = {f.member_id for f in facts if f.kind in domain.REFERRAL_ACTIVATING}
    if not doers:
        return []
    friends = {
        m: doc
        for m, doc in (await store.referral_links(doers)).items()
        if doc.get("referred_by") and not doc.get("referral_counted_ms")
    }
    referrers = {doc["referred_by"] for doc in friends.values()} - set(friends)
    if not friends:
        return []
    known = {**friends, **await store.referral_links(referrers)}
    return domain.referral_credits(facts, known)


# -- what the activities service says --------------------------------------------------------------


class MemberNotYetKnown(LookupError):
    """An attendance names a member whose member-joined has not reached this service yet (the
    two streams are not ordered with each other): a later try may find them."""


async def credit_attendance(batch: Batch, store: EngagementStore, uow: UnitOfWork) -> int:
    """Activities' events: titles and time zones noted, then each attendance an approved hours
    entry with its hours-approved (attendance.py), all the batch's entries in one unordered
    insert; scoring follows from hours-approved as for hours approved by hand. Returns how many
    entries were made (an attendance credited before makes none)."""
    for event, data in batch:
        note = attendance.activity_note(event.time, data)
        if note is not None:
            await store.note_activity(note.activity_id, note.at_ms, note.title, note.timezone)
    attended = [(event, data) for event, data in batch if isinstance(data, Attended)]
    if not attended:
        return 0
    members = await store.members_by_id({data.member_id for _, data in attended})
    unknown = sorted({data.member_id for _, data in attended} - set(members))
    if unknown:
        raise MemberNotYetKnown(f"member(s) {unknown} not known yet (member-joined pending)")
    activities = await store.activities_by_id({data.activity_id for _, data in attended})
    entries: dict[str, tuple[Doc, CloudEvent]] = {}
    for event, data in attended:
        if members[data.member_id].get("status") == "erased":
            continue  # a replayed attendance must not bring an erased member's hours back
        made = attendance.attendance_entry(data, activities.get(data.activity_id), event.time)
        if made is None:
            log.info("attendance %s of %s has no hours: nothing to credit", event.id, data.shift_id)
            continue
        entry, approved = made
        if entry["_id"] in entries:
            continue  # the same member and shift again in this batch: the first one counts
        # The entry's one hours-approved: its id follows the entry's (the same on every try).
        ident = derived_event_id("hours-approved", entry["_id"])
        entries[entry["_id"]] = (
            entry,
            new_event(
                approved, event_id=ident, time=event.time, correlation_id=event.correlationid
            ),
        )
    return await store.insert_hours(uow, list(entries.values()))
