"""The engagement service's MongoDB collections, indexes, reads and the writes made at once.

Every filter goes through `shared.query.where` (the indexed form on both servers) and every
listing pages on one sort-key field (docs/patterns.md, "Queries that stay fast"). Times that are
queried or updated by path are integer epoch milliseconds (`*_ms`): nx-27017 stores a date
`$set` by path as a string. The reads behind the figures (leaderboards, segments, stats) are in
`standings.py`, what the erasure of a member reads in `erasure.py`, the volunteer hours in
`hours_store.py`, the kept counters' deltas in `counted.py`.

The store reads, and makes the writes no use case's unit of work makes (the projections an
event handler keeps, the kept counters' deltas of member and activity events, the notes of
first answers and counted referrals, the jobs' bookkeeping, index set-up): docs/engagement.md
lists them. The writes made for a use case are not made here: the service's unit of work owns
the repositories that stage them (repositories.py: `uow.posts`, `uow.hours`, `uow.requests`,
`uow.counters`, `uow.standings`), given this store for its collections; nothing reaches the
database before the use case commits, and the commit publishes the events the writes carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pymongo import DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from services.engagement import counted
from services.engagement.hours_store import HoursRecords
from services.engagement.ranking import DRIFT_KEY, KEYS_VERSION_FIELD, LOYAL_KEY, NEW_KEY
from shared.clock import epoch_ms, utcnow
from shared.documents import Doc
from shared.events import CloudEvent
from shared.http import IDEMPOTENCY_TTL
from shared.outbox_layout import without_outbox
from shared.projection import MemberProjection
from shared.query import by_ids, count, order_key, where

#: Figure fields of a member's standing that only an active member has (leaving unsets them).
RANK_FIELDS = ("rank_all", "rank7", "rank30")
#: What the members projection keeps of each member (shared/projection.py).
PROJECTED_FIELDS = ("display_name", "region", "roles", "locale", "timezone", "referred_by")
#: Reads of documents that carry events leave the kernel's outbox fields out.
HIDE = without_outbox()


@dataclass
class StandingWrite:
    """One guarded read-modify-write of a member's standing (`StandingsRepository.write`)."""

    member_id: str
    version: int | None  # what was read; None: no standing yet (or one from before versions)
    fields: Doc
    unset: list[str] = field(default_factory=list)
    events: list[CloudEvent] = field(default_factory=list)


class EngagementStore(HoursRecords):
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.members = db["members"]  # projection of the members service's events
        self.posts = db["posts"]
        self.comments = db["comments"]
        self.reactions = db["reactions"]
        self.hours = db["hours"]
        #: What attendance entries need of an activity: its title and time zone (attendance.py).
        self.activities = db["activities"]
        self.standing = db["standing"]  # per member: activity record, figures, level, drift
        self.returns = db["returns"]  # members who came back after a drift episode
        self.jobs = db["jobs"]  # leases of the periodic jobs
        self.idempotency = db["idempotency_keys"]  # the HTTP kernel's replayable responses
        #: Idempotency-Key records of decisions on a member's hours (`note_decision_request`).
        self.decision_requests = db["decision_requests"]
        #: The community's kept counters (counted.py, shared/tally.py).
        self.counters = counted.tally(db["tallies"])
        self.projection = MemberProjection(self.members, PROJECTED_FIELDS)

    async def ensure_indexes(self) -> None:
        await self.members.create_index("joined_at_ms")
        await self.posts.create_index([("kind", 1), ("created_ms", 1)])
        await self.posts.create_index([("answered_created_ms", 1), ("wait_ms", 1)])
        await self.posts.create_index("created_ms")
        await self.posts.create_index([("open", 1), ("created_ms", 1)])
        await self.posts.create_index("author_id")
        await self.posts.create_index("accepted_answerer_id")
        await self.comments.create_index([("post_id", 1), ("order_key", 1)])
        await self.comments.create_index("order_key")  # finds what the backfill must do
        await self.comments.create_index("author_id")
        await self.comments.create_index("post_author_id")
        await self.reactions.create_index("post_id")
        await self.reactions.create_index("member_id")
        await self.reactions.create_index("post_author_id")
        await self.hours.create_index([("member_id", 1), ("order_key", DESCENDING)])
        await self.hours.create_index("order_key")  # finds what the backfill must do
        await self.hours.create_index([("member_id", 1), ("status", 1), ("order_key", DESCENDING)])
        await self.hours.create_index("decided_by")
        await self.hours.create_index([("status", 1), ("decided_ms", 1)])
        s = self.standing
        for rank in RANK_FIELDS:
            await s.create_index(rank)
            await s.create_index([("region", 1), (rank, 1)])
        # Segments: each read in its own rank key (ranking.py); `keys_v` finds the standings
        # written without the keys (tombstones, `erased`, have none and need none).
        # The drifting are counted with their last participation (both in the index).
        await s.create_index(LOYAL_KEY)
        await s.create_index(NEW_KEY)
        await s.create_index([(DRIFT_KEY, 1), ("last_ms", 1)])
        await s.create_index([(KEYS_VERSION_FIELD, 1), ("erased", 1)])
        await s.create_index("last_ms")
        await s.create_index("due_ms")
        await s.create_index("drift_due_ms")
        await self.returns.create_index("at_ms")
        await self.returns.create_index("member_id")
        await self.decision_requests.create_index("member_id")
        # Kept as long as the records they point to (the kernel's expiry; harmless if late).
        await self.decision_requests.create_index(
            "created_at", expireAfterSeconds=int(IDEMPOTENCY_TTL.total_seconds())
        )
        await self.counters.ensure_indexes()
        await self._backfill_order_keys()

    async def _backfill_order_keys(self) -> None:
        # Comments and hours stored before listings paged on one key get theirs once (an
        # indexed `$exists: false`: it finds nothing after the first start).
        for coll in (self.comments, self.hours):
            async for doc in coll.find(where(order_key={"$exists": False}), {"created_ms": 1}):
                key = order_key(int(doc.get("created_ms") or 0), doc["_id"])
                await coll.update_one({"_id": doc["_id"]}, {"$set": {"order_key": key}})

    # -- members (projection) ---------------------------------------------------------------------

    async def member(self, member_id: str) -> Doc | None:
        return await self.members.find_one({"_id": member_id})

    async def members_by_id(self, member_ids: Iterable[str]) -> dict[str, Doc]:
        return await by_ids(self.members, member_ids)

    async def referral_links(self, member_ids: Iterable[str]) -> dict[str, Doc]:
        """Status, referrer and whether their referral counted already, by member."""
        fields = {"status": 1, "referred_by": 1, "referral_counted_ms": 1}
        return await by_ids(self.members, member_ids, fields)

    async def note_referrals_counted(self, friend_ids: list[str], now: datetime) -> None:
        """These friends' referrals are recorded: their later activity needs no look at them."""
        if not friend_ids:
            return
        at = epoch_ms(now)
        # Never onto an erased member's tombstone (it keeps nothing but its status).
        ops = [
            UpdateOne(where({"_id": f, "status": "active"}), {"$set": {"referral_counted_ms": at}})
            for f in friend_ids
        ]
        await self.members.bulk_write(ops, ordered=False)

    async def erased_among(self, member_ids: Iterable[str]) -> set[str]:
        found = await by_ids(self.members, member_ids, {"status": 1})
        return {m for m, doc in found.items() if doc.get("status") == "erased"}

    # -- standings: one document per member -------------------------------------------------------

    async def standings(self, member_ids: Iterable[str]) -> dict[str, Doc]:
        return await by_ids(self.standing, member_ids, HIDE)

    async def drift_due(self, now_ms: int, limit: int) -> list[Doc]:
        """Members whose drift episode has begun and is not reported yet."""
        found = self.standing.find(where(drift_due_ms={"$lte": now_ms}), HIDE)
        return await found.sort("drift_due_ms", 1).limit(limit).to_list(None)

    async def drift_reported(self, member_id: str) -> None:
        await self.standing.update_one(
            {"_id": member_id}, {"$unset": {"drift_due_ms": ""}, "$inc": {"version": 1}}
        )

    async def postpone(self, member_id: str, due_field: str, until_ms: int) -> None:
        """A standing a scan could not handle is due again only at `until_ms` (no version
        bump: a figures write that read before simply computes the field again)."""
        await self.standing.update_one({"_id": member_id}, {"$set": {due_field: until_ms}})

    async def due(self, now_ms: int, limit: int) -> list[str]:
        """Members whose standing must be looked at again by now (decay, windows, folding)."""
        found = self.standing.find(where(due_ms={"$lte": now_ms}), {"_id": 1})
        return [d["_id"] async for d in found.sort("due_ms", 1).limit(limit)]

    # -- posts, comments, reactions ---------------------------------------------------------------

    async def post(self, post_id: str) -> Doc | None:
        return await self.posts.find_one({"_id": post_id}, HIDE)

    async def posts_by_id(self, post_ids: Iterable[str]) -> dict[str, Doc]:
        return await by_ids(
            self.posts, post_ids, {"created_ms": 1, "kind": 1, "first_answer_ms": 1}
        )

    async def comment(self, comment_id: str) -> Doc | None:
        return await self.comments.find_one({"_id": comment_id}, HIDE)

    async def reaction(self, reaction_id: str) -> Doc | None:
        return await self.reactions.find_one({"_id": reaction_id}, HIDE)

    async def comments_of(self, post_id: str, limit: int, after: str | None) -> list[Doc]:
        """Oldest first, from after the sort key `after`."""
        query = where(post_id=post_id, order_key={"$gt": after or ""})
        found = self.comments.find(query, HIDE).sort("order_key", 1).limit(limit)
        return await found.to_list(None)

    async def reaction_counts(self, post_id: str) -> dict[str, int]:
        pipeline: list[Doc] = [
            {"$match": where(post_id=post_id)},
            {"$group": {"_id": "$reaction", "n": {"$sum": 1}}},
        ]
        rows = await (await self.reactions.aggregate(pipeline)).to_list(None)
        return {row["_id"]: int(row["n"]) for row in rows}

    async def comment_count(self, post_id: str) -> int:
        return await count(self.comments, {"post_id": post_id})

    async def note_first_answers(self, answers: dict[str, int]) -> None:
        """Earliest comment by another member per post (epoch ms) and the wait for it:
        `$min`, so the order comments arrive in does not matter. A question is no longer open."""
        posts = await self.posts_by_id(answers)
        ops, now = [], utcnow()
        # A question answered for the first time is counted first (counted.py; a retry after a
        # crash in between counts it once).
        await self.counters.add(
            [
                counted.answered(self.counters, post_id, int(post["created_ms"]), now)
                for post_id, post in posts.items()
                if post.get("kind") == "question" and "created_ms" in post
                and "first_answer_ms" not in post
            ]
        )  # fmt: skip
        for post_id, at in answers.items():
            post = posts.get(post_id)
            if post is None or "created_ms" not in post:
                continue
            update: Doc = {
                "$min": {"first_answer_ms": at, "wait_ms": max(at - post["created_ms"], 0)},
                "$unset": {"open": ""},
            }
            if post.get("kind") == "question":
                # The question's time again, on answered questions only: the month's answered
                # questions are one index range (and sorted by wait within it).
                update["$set"] = {"answered_created_ms": post["created_ms"]}
            ops.append(UpdateOne({"_id": post_id}, update))
        if ops:
            await self.posts.bulk_write(ops, ordered=False)

    async def has_answer(self, post_id: str, asker_id: str) -> bool:
        """Any comment by someone else (a post's comments: bounded by the post)."""
        found = self.comments.find(where(post_id=post_id), {"author_id": 1})
        return any([d.get("author_id") not in (None, asker_id) async for d in found])

    async def open_questions(self, created_before_ms: int) -> list[Doc]:
        """Questions old enough, with no answer seen yet and not yet reported as unanswered
        (`open` is set at asking and unset by the first answer or the report)."""
        query = where(open=1, created_ms={"$lte": created_before_ms})
        return await self.posts.find(query, HIDE).to_list(None)

    async def close_question(self, post_id: str) -> None:
        """Answered after all (the job saw a comment the consumer had not noted yet)."""
        await self.posts.update_one({"_id": post_id}, {"$unset": {"open": ""}})
