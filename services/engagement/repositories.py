"""The engagement service's unit of work and the repositories it owns.

A use case opens an `EngagementUnitOfWork` (the composition root makes the factory) and stages
its writes through the repositories the unit of work made for it: `uow.posts` (posts, comments,
reactions and the questions' guarded marks), `uow.hours` (volunteer hours entries),
`uow.requests` (the kept Idempotency-Key records about a member), `uow.counters` (the kept
counters' deltas) and `uow.standings` (members' standings and their returns after drift). A
repository only stages (`shared.uow.Repository`): each method returns the staged step, made by
the owner's commit, which also publishes the events the write carries; the use case commits
where its next move depends on a write's outcome. Two outcomes are read the repository's way,
and are `shared.uow.Outcome`s of the steps they stage: the standings' version-guarded bulk
(`write`: which members lost the race) and the drift episode's two guards (`flag_drift`: whether
this call opened it); `await uow.commit(outcome)` returns them. The repositories keep the store
for its collections; plain reads, and the writes no use case's unit of work makes, stay on
`EngagementStore` (store.py says which).
"""

from __future__ import annotations

from datetime import datetime

from pymongo import ReplaceOne
from pymongo.results import BulkWriteResult, UpdateResult

from services.engagement import counted
from services.engagement.store import EngagementStore, StandingWrite
from shared.clock import epoch_ms, utcnow
from shared.documents import Doc
from shared.events import CloudEvent
from shared.http import requests_of
from shared.outbox_layout import FORGET_DEAD_EVENTS
from shared.outbox_port import Publisher
from shared.query import setting, where
from shared.uow import Outcome, Repository, Step, UnitOfWork, Write


class _OfStore(Repository):
    """A repository given the service's store, for its collections and the reads it needs."""

    __slots__ = ("store",)

    def __init__(self, uow: UnitOfWork, store: EngagementStore) -> None:
        super().__init__(uow)
        self.store = store


class PostsRepository(_OfStore):
    """The writes of what members write: posts, comments, reactions, the questions' marks."""

    __slots__ = ()

    def insert(self, doc: Doc, events: list[CloudEvent]) -> Step[None]:
        """Stage a new post with its events (a duplicate key at commit: the same request)."""
        return self.uow.insert(self.store.posts, doc, events)

    def insert_comment(self, doc: Doc, events: list[CloudEvent]) -> Step[None]:
        return self.uow.insert(self.store.comments, doc, events)

    def insert_reaction(self, doc: Doc, events: list[CloudEvent]) -> Step[None]:
        return self.uow.insert(self.store.reactions, doc, events)

    def accept_answer(self, post_id: str, accepted: Doc, event: CloudEvent) -> Step[UpdateResult]:
        """Stage the accepted answer, once per question (the guard: it changed the post when
        its outcome's `modified_count` is 1), with answer-accepted."""
        return self.uow.update(
            self.store.posts,
            where({"_id": post_id, "accepted_comment_id": {"$exists": False}}),
            {"$set": accepted},
            [event],
        )

    def flag_unanswered(self, post_id: str, now_ms: int, event: CloudEvent) -> Step[UpdateResult]:
        """Stage question-unanswered with its mark, once per question (the guard: it flagged
        the question when its outcome's `modified_count` is 1)."""
        return self.uow.update(
            self.store.posts,
            where({"_id": post_id, "unanswered_ms": {"$exists": False}}),
            {"$set": {"unanswered_ms": now_ms}, "$unset": {"open": ""}},
            [event],
        )

    def anonymise(self, member_id: str) -> None:
        """Stage an erased member's posts and comments as anonymous tombstones (no author,
        title, body or tags), and their name taken off others' posts, comments and reactions."""
        store, uow = self.store, self.uow
        removed = {"title": "", "body": "", "tags": [], "author_id": None}
        mine = where(author_id=member_id)
        # Events set aside as unpublishable (and their error strings) go with the text.
        uow.update_many(
            store.posts, mine, {"$set": removed, "$unset": {"open": "", **FORGET_DEAD_EVENTS}}
        )
        uow.update_many(
            store.posts,
            where(accepted_answerer_id=member_id),
            {"$set": {"accepted_answerer_id": None}},
        )
        uow.update_many(
            store.comments,
            mine,
            {"$set": {"body": "", "author_id": None}, "$unset": FORGET_DEAD_EVENTS},
        )
        uow.update_many(
            store.comments, where(post_author_id=member_id), {"$set": {"post_author_id": None}}
        )
        uow.update_many(store.reactions, where(member_id=member_id), {"$set": {"member_id": None}})
        uow.update_many(
            store.reactions, where(post_author_id=member_id), {"$set": {"post_author_id": None}}
        )


class HoursRepository(_OfStore):
    """The writes of volunteer hours entries (hours_store.py has their reads)."""

    __slots__ = ()

    def insert(self, entry: Doc, events: list[CloudEvent]) -> Step[None]:
        """Stage a new entry (a duplicate key at commit: the same request again)."""
        return self.uow.insert(self.store.hours, entry, events)

    def insert_entries(self, entries: list[tuple[Doc, CloudEvent]]) -> Step[BulkWriteResult | None]:
        """Stage new entries with their events in one unordered bulk insert; an entry whose id
        exists already (the same cause again) is left as it is: the step's `refused` lists
        those (how many were inserted: `len(entries) - len(step.refused)`)."""
        writes = [Write.insert(doc, [event]) for doc, event in entries]
        return self.uow.bulk(self.store.hours, writes, skip_duplicates=True)

    def decide(self, entry_id: str, decision: Doc, events: list[CloudEvent]) -> Step[UpdateResult]:
        """Stage pending → approved/rejected, once (the guard: this decision was made when the
        outcome's `modified_count` is 1); an approval carries hours-approved."""
        return self.uow.update(
            self.store.hours,
            where({"_id": entry_id, "status": "pending"}),
            {"$set": decision},
            events,
        )

    def forget(self, member_id: str) -> None:
        """Stage an erased member's entries deleted, and their name taken off their decisions."""
        hours = self.store.hours
        self.uow.delete(hours, where(member_id=member_id))
        self.uow.update_many(hours, where(decided_by=member_id), {"$set": {"decided_by": None}})


class RequestsRepository(_OfStore):
    """The writes of what is kept about requests answered under an Idempotency-Key."""

    __slots__ = ()

    def note_decision_request(self, record_id: str, member_id: str) -> Step[BulkWriteResult | None]:
        """Stage the note that a decision on a member's hours was answered under an
        Idempotency-Key: the kernel files its record under the decider (`by`), but the response
        shows the member's entry, so erasure must find it by the member too. Stamped with real
        time, not the service's clock, as the kernel's record is: the note expires with it (a
        write stamp). Noted once: a duplicate (the same request again) is skipped."""
        note = {"_id": record_id, "member_id": member_id, "created_at": utcnow()}
        return self.uow.bulk(
            self.store.decision_requests, [Write.insert(note)], skip_duplicates=True
        )

    def forget(self, member_id: str, decision_ids: list[str]) -> None:
        """Stage the deletes of the Idempotency-Key records about the member: those the kernel
        filed under them (the first member named in the request) and the decisions on their
        hours (`decision_ids`, as erasure.decision_requests_of read them)."""
        self.uow.delete(self.store.idempotency, requests_of(member_id))
        if decision_ids:
            self.uow.delete(self.store.idempotency, {"_id": {"$in": decision_ids}})
            self.uow.delete(self.store.decision_requests, {"_id": {"$in": decision_ids}})


class CountersRepository(_OfStore):
    """The writes of the kept counters' deltas that a use case's unit of work makes."""

    __slots__ = ()

    def count(self, deltas: list[Doc | None]) -> Step[BulkWriteResult | None]:
        """Stage counted changes (counted.py): one unordered insert of the delta documents, a
        delta recorded before (its id names the change) skipped, as the kept counters' own
        insert does (shared/tally.py)."""
        docs = [Write.insert(d) for d in deltas if d is not None]
        return self.uow.bulk(self.store.counters.collection, docs, skip_duplicates=True)

    def fill(self, deltas: list[Doc | None], now: datetime) -> None:
        """Stage the counters' one fill (counted.unfilled read its deltas): the deltas, a
        thousand a write, then the mark that they are filled (a fill that fails before the mark
        is made again, its deltas counted once)."""
        counters = self.store.counters
        for first in range(0, len(deltas), 1000):
            self.count(deltas[first : first + 1000])
        self.uow.update(
            counters.collection,
            {"_id": f"{counters.name}:{counted.FILLED}"},
            {"$set": {"at_ms": epoch_ms(now)}},
            upsert=True,
        )


class StandingsRepository(_OfStore):
    """The writes of members' standings (one document per member) and of their returns after
    drift."""

    __slots__ = ("_counters",)

    def __init__(self, uow: UnitOfWork, store: EngagementStore) -> None:
        super().__init__(uow, store)
        self._counters = CountersRepository(uow, store)

    def write(self, writes: list[StandingWrite]) -> Outcome[set[str]]:
        """Stage standings written only where nobody wrote since they were read; the outcome
        (after the commit: `await uow.commit(step)` returns it) is the members whose standing
        changed in between (read again and recompute those).

        Each write is an upsert guarded by the version read, so a lost race shows up as a
        duplicate key at its index (an unordered bulk write reports exactly those), and a
        member's level-changed rides in the same write as the level (the outbox).
        """
        ops = []
        for w in writes:
            guard: Doc = {"_id": w.member_id}
            guard["version"] = {"$exists": False} if w.version is None else w.version
            update = setting({**w.fields, "version": (w.version or 0) + 1}, w.unset)
            ops.append(Write.update(w.member_id, guard, update, w.events, upsert=True))
        step = self.uow.bulk(self.store.standing, ops, skip_duplicates=True)
        return Outcome(lambda: {writes[i].member_id for i in step.refused}, step)

    def flag_drift(
        self,
        member_id: str,
        last_active_ms: int,
        now_ms: int,
        event: CloudEvent,
        *,
        keys: Doc | None = None,
        version: int | None = None,
    ) -> Outcome[bool]:
        """Stage opening a drift episode (once per period of inactivity, named by its last
        activity); the outcome: True when this call opened it. Sets `keys` (the member's
        `drift_key`) in the same update; with `version`, only on the standing as read (a key
        computed from an older score is not written over a newer).

        Episodes only move forward. Two single-condition updates, not one `$or` beside `_id`:
        on nx-27017 such a write filter can modify another document (docs/patterns.md). Both
        are staged, in this order: the second can change the standing only when the first
        matched nothing (the first sets `drift_from_ms`, which the second requires absent).
        """
        update = {
            "$set": {"drift_from_ms": last_active_ms, "drift_flagged_ms": now_ms, **(keys or {})},
            "$unset": {"drift_due_ms": ""},
            # A figures write that read before this one recomputes with the episode.
            "$inc": {"version": 1},
        }
        pinned: Doc = {"_id": member_id}
        if version is not None:
            pinned["version"] = version
        steps = [
            self.uow.update(
                self.store.standing, where({**pinned, "drift_from_ms": guard}), update, [event]
            )
            for guard in ({"$lt": last_active_ms}, {"$exists": False})
        ]
        return Outcome(lambda: any(s.result.modified_count == 1 for s in steps), *steps)

    def key(self, writes: list[Write]) -> Step[BulkWriteResult | None]:
        """Stage the segment keys of standings (`Standings.keys` made the writes, each only on
        the standing as read); the outcome's `modified_count` says how many were keyed."""
        return self.uow.bulk(self.store.standing, writes)

    def record_returns(self, returns: list[tuple[str, int, int]]) -> None:
        """Stage members active again after a drift episode, counted once per episode:
        (member, drift_from_ms, came back at ms). Counted first (the kept counters' delta, a
        retry finds the return unnoted and counts it once: shared/tally.py), then each return's
        record, then its note on the standing."""
        store, now = self.store, utcnow()
        self._counters.count(
            [counted.returned(store.counters, f"{m}:{f}", at, now) for m, f, at in returns]
        )
        for member_id, drift_from_ms, at_ms in returns:
            record = {"_id": f"{member_id}:{drift_from_ms}", "member_id": member_id, "at_ms": at_ms}
            # A duplicate (recorded before) must not stop the commit: a bulk of one that skips it.
            self.uow.bulk(store.returns, [Write.insert(record)], skip_duplicates=True)
            self.uow.update(
                store.standing, {"_id": member_id}, {"$set": {"return_noted_ms": drift_from_ms}}
            )

    def forget_returns(self, member_id: str) -> None:
        """Stage the deletes of an erased member's returns after drift."""
        self.uow.delete(self.store.returns, where(member_id=member_id))

    def erase(self, member_id: str) -> Step[BulkWriteResult | None]:
        """Stage the standing's replacement by a tombstone, made whether or not there was one: a
        late or replayed event finds it and changes nothing. (A replacement that may insert: a
        bulk of one `ReplaceOne` upsert, the write this always was; the unit of work's
        `replace` does not insert.)"""
        tombstone = ReplaceOne({"_id": member_id}, {"erased": 1, "version": 2**31}, upsert=True)
        erased = Write(tombstone, member_id, [])
        return self.uow.bulk(self.store.standing, [erased])


class EngagementUnitOfWork(UnitOfWork):
    """An engagement use case's unit of work, owning the service's repositories."""

    def __init__(self, relay: Publisher, store: EngagementStore) -> None:
        super().__init__(relay)
        self.posts: PostsRepository = PostsRepository(self, store)
        self.hours: HoursRepository = HoursRepository(self, store)
        self.requests: RequestsRepository = RequestsRepository(self, store)
        self.counters: CountersRepository = CountersRepository(self, store)
        self.standings: StandingsRepository = StandingsRepository(self, store)
