"""The engagement service's MongoDB collections, indexes and queries.

Times that are queried or updated by path are stored as integer epoch milliseconds (`*_ms`):
nx-27017 stores a date `$set` by path as a string and `$max` of a date never replaces one, while
numbers behave as in MongoDB (tests/integration/test_mongo_conformance.py).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from pymongo import DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from services.engagement import domain
from shared.events import CloudEvent
from shared.outbox import update_with_outbox, with_outbox
from shared.store import epoch_ms, from_epoch_ms, is_duplicate_key, only_duplicates

Doc = dict[str, Any]
#: A position in a listing ordered by time: (created_ms, _id) of the last item seen.
Cursor = tuple[int, str]
NO_OUTBOX = {"outbox": 0, "outbox_pending": 0}


def from_ms(ms: int | float | None) -> datetime | None:
    return None if ms is None else from_epoch_ms(ms)


def encode_cursor(doc: Doc) -> str:
    return f"{doc['created_ms']}:{doc['_id']}"


def decode_cursor(raw: str | None) -> Cursor | None:
    """The (created_ms, _id) of `encode_cursor`; None for no or a malformed cursor."""
    ms, _, last_id = (raw or "").partition(":")
    return (int(ms), last_id) if ms.isdigit() and last_id else None


def safe_key(fact_id: str) -> str:
    """A fact id usable as a field name (no dots, no leading $)."""
    if "." in fact_id or fact_id.startswith("$"):
        return "h" + hashlib.sha256(fact_id.encode()).hexdigest()[:32]
    return fact_id


class LevelMove(NamedTuple):
    """A member's move from level_seq `seq` to `level`, with its level-changed event."""

    member_id: str
    seq: int
    level: str
    score: float
    event: CloudEvent


class EngagementStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.members = db["members"]  # projection of the members service's events
        self.posts = db["posts"]
        self.comments = db["comments"]
        self.reactions = db["reactions"]
        self.hours = db["hours"]
        self.activity = db["activity"]  # one bucket per member and UTC day: the facts
        self.standing = db["standing"]  # per member: level (with its outbox), drift episode
        self.returns = db["returns"]  # members who came back after a drift episode
        self.jobs = db["jobs"]  # leases of the periodic jobs
        #: Collections whose documents carry outgoing events (the relay publishes them).
        self.with_outbox = (self.posts, self.comments, self.reactions, self.hours, self.standing)

    async def ensure_indexes(self) -> None:
        await self.members.create_index([("status", 1), ("region", 1)])
        await self.members.create_index("joined_at_ms")
        await self.posts.create_index([("kind", 1), ("created_ms", DESCENDING)])
        await self.posts.create_index("author_id")
        await self.comments.create_index([("post_id", 1), ("created_ms", 1)])
        await self.comments.create_index("author_id")
        await self.reactions.create_index("post_id")
        await self.reactions.create_index("member_id")
        await self.hours.create_index([("member_id", 1), ("created_ms", DESCENDING)])
        await self.activity.create_index([("member_id", 1), ("day_ms", 1)])
        await self.activity.create_index("day_ms")
        await self.activity.create_index("last_ms")
        await self.standing.create_index("level")
        await self.returns.create_index("at_ms")

    # -- members (projection) ---------------------------------------------------------------------

    async def member(self, member_id: str) -> Doc | None:
        return await self.members.find_one({"_id": member_id})

    async def members_by_id(self, member_ids: Iterable[str]) -> dict[str, Doc]:
        ids = list(set(member_ids))
        if not ids:
            return {}
        return {d["_id"]: d async for d in self.members.find({"_id": {"$in": ids}})}

    async def erased_among(self, member_ids: Iterable[str]) -> set[str]:
        query = {"_id": {"$in": list(set(member_ids))}, "status": "erased"}
        return {d["_id"] async for d in self.members.find(query, {"_id": 1})}

    async def active_member_ids(self, region: str | None = None) -> set[str]:
        query: Doc = {"status": "active"}
        if region:
            query["region"] = region
        return {d["_id"] async for d in self.members.find(query, {"_id": 1})}

    async def members_joined_since(self, since: datetime) -> list[Doc]:
        return await self.members.find(
            {"status": "active", "joined_at_ms": {"$gte": epoch_ms(since)}}
        ).to_list(None)

    # -- activity buckets (the facts) -------------------------------------------------------------

    async def record_facts(self, facts: list[domain.Fact], rules: domain.Rules) -> None:
        """Add facts to their member-day buckets: one unordered bulk write for the whole batch.

        Each bucket's update is guarded by the ids of the facts it adds (PATTERNS.md 2), so a
        fact already applied is never added twice. A bucket whose guard fails (some of its facts
        were applied before a crash) is redone fact by fact, each with its own guard.
        """
        by_bucket: dict[str, list[domain.Fact]] = defaultdict(list)
        for fact in facts:
            by_bucket[_bucket_id(fact)].append(fact)
        ids = list(by_bucket)
        ops = [_bucket_update(bucket_id, by_bucket[bucket_id], rules) for bucket_id in ids]
        if not ops:
            return
        try:
            await self.activity.bulk_write(ops, ordered=False)
            return
        except BulkWriteError as exc:
            if not only_duplicates(exc):
                raise
            redo = [ids[error["index"]] for error in exc.details["writeErrors"]]
        for bucket_id in redo:
            for fact in by_bucket[bucket_id]:
                try:
                    await self.activity.update_one(*_bucket_args(bucket_id, [fact], rules))
                except Exception as exc:
                    if not is_duplicate_key(exc):
                        raise

    async def buckets(self, member_ids: Iterable[str], since: datetime | None = None) -> list[Doc]:
        query: Doc = {"member_id": {"$in": list(set(member_ids))}}
        if since is not None:
            query["day_ms"] = {"$gte": epoch_ms(since)}
        return await self.activity.find(query, {"applied": 0}).to_list(None)

    async def masses(
        self, member_ids: Iterable[str], since: datetime, before: datetime | None = None
    ) -> list[Doc]:
        """Only what a score needs (member, day, mass) of the buckets in [since, before)."""
        days: Doc = {"$gte": epoch_ms(since)}
        if before is not None:
            days["$lt"] = epoch_ms(before)
        query = {"member_id": {"$in": list(set(member_ids))}, "day_ms": days}
        fields = {"_id": 0, "member_id": 1, "day_ms": 1, "mass": 1}
        return await self.activity.find(query, fields).to_list(None)

    async def points_by_member(
        self, since: datetime | None, member_ids: set[str] | None
    ) -> list[Doc]:
        """Raw points per member (no decay) from `since`'s day on, most first."""
        match: Doc = {}
        if since is not None:
            match["day_ms"] = {"$gte": epoch_ms(domain.day_of(since))}
        if member_ids is not None:
            match["member_id"] = {"$in": sorted(member_ids)}
        pipeline: list[Doc] = [
            {"$match": match},
            {"$group": {"_id": "$member_id", "points": {"$sum": "$points"}}},
            {"$sort": {"points": -1, "_id": 1}},
        ]
        return await (await self.activity.aggregate(pipeline)).to_list(None)

    async def last_active(self, member_ids: Iterable[str]) -> dict[str, int]:
        """Last participation (epoch ms) of each member that has any."""
        pipeline: list[Doc] = [
            {"$match": {"member_id": {"$in": list(set(member_ids))}, "last_ms": {"$gt": 0}}},
            {"$group": {"_id": "$member_id", "last_ms": {"$max": "$last_ms"}}},
        ]
        rows = await (await self.activity.aggregate(pipeline)).to_list(None)
        return {row["_id"]: int(row["last_ms"]) for row in rows}

    async def count_active_since(self, since: datetime) -> int:
        pipeline: list[Doc] = [
            {"$match": {"last_ms": {"$gte": epoch_ms(since)}}},
            {"$group": {"_id": "$member_id"}},
            {"$count": "n"},
        ]
        rows = await (await self.activity.aggregate(pipeline)).to_list(None)
        return int(rows[0]["n"]) if rows else 0

    async def hours_since(self, since: datetime) -> float:
        pipeline: list[Doc] = [
            {"$match": {"day_ms": {"$gte": epoch_ms(domain.day_of(since))}, "hours": {"$gt": 0}}},
            {"$group": {"_id": None, "hours": {"$sum": "$hours"}}},
        ]
        rows = await (await self.activity.aggregate(pipeline)).to_list(None)
        return float(rows[0]["hours"]) if rows else 0.0

    # -- standing: level and drift episode --------------------------------------------------------

    async def standings(self, member_ids: Iterable[str]) -> dict[str, Doc]:
        ids = list(set(member_ids))
        return {d["_id"]: d async for d in self.standing.find({"_id": {"$in": ids}}, NO_OUTBOX)}

    async def standings_at(self, levels: Iterable[str]) -> list[Doc]:
        return await self.standing.find({"level": {"$in": list(levels)}}, NO_OUTBOX).to_list(None)

    async def change_levels(self, moves: list[LevelMove], now: datetime) -> None:
        """Apply level moves in one bulk write, each only if the member's level is still the one
        it was computed from (`level_seq`), each with its level-changed riding along.

        A move that lost a race changes nothing: callers re-read to see which moves took.
        """
        ops = []
        for move in moves:
            fields = {"level": move.level, "level_seq": move.seq + 1, "score": move.score,
                      "changed_ms": epoch_ms(now)}  # fmt: skip
            update = update_with_outbox({"$set": fields}, [move.event])
            if move.seq == 0:  # the member's first level change creates their standing
                guard: Doc = {"_id": move.member_id, "level_seq": {"$exists": False}}
                ops.append(UpdateOne(guard, update, upsert=True))
            else:
                ops.append(UpdateOne({"_id": move.member_id, "level_seq": move.seq}, update))
        try:
            await self.standing.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if not only_duplicates(exc):  # a duplicate: another writer created it first
                raise

    async def set_base(self, member_id: str, base_seq: int, day: datetime, mass: float) -> None:
        """Store the member's score at `day` of every bucket before it, unless a late fact
        (`forget_bases`) came in since the standing was read at `base_seq`."""
        unchanged: Doc = {"base_seq": base_seq}
        if base_seq == 0:
            unchanged = {"$or": [{"base_seq": {"$exists": False}}, {"base_seq": 0}]}
        await self.standing.update_one(
            {"_id": member_id, **unchanged},
            {"$set": {"base_day_ms": epoch_ms(day), "base_mass": mass}},
        )

    async def forget_bases(self, late: dict[str, datetime]) -> None:
        """A fact dated `late[member]` may lie before the member's base: drop the base (reads
        sum the buckets again) and bump base_seq so that a roll in progress does not set one."""
        ops = [
            UpdateOne(
                {"_id": member_id, "$or": [
                    {"base_day_ms": {"$exists": False}}, {"base_day_ms": {"$gt": epoch_ms(day)}},
                ]},
                {"$unset": {"base_day_ms": "", "base_mass": ""}, "$inc": {"base_seq": 1}},
            )
            for member_id, day in late.items()
        ]  # fmt: skip
        if ops:
            await self.standing.bulk_write(ops, ordered=False)

    async def flag_drift(
        self, member_id: str, last_active_ms: int, now: datetime, event: CloudEvent
    ) -> bool:
        """Open a drift episode (once per period of inactivity, named by its last activity).

        Episodes only move forward. Not `{"$ne": last_active_ms}`: in an update filter,
        nx-27017 never matches `$ne` on a missing field (a find does, as MongoDB would).
        """
        later_episode = [
            {"drift_from_ms": {"$exists": False}},
            {"drift_from_ms": {"$lt": last_active_ms}},
        ]
        result = await self.standing.update_one(
            {"_id": member_id, "$or": later_episode},
            update_with_outbox(
                {"$set": {"drift_from_ms": last_active_ms, "drift_flagged_ms": epoch_ms(now)}},
                [event],
            ),
        )
        return result.modified_count == 1

    async def record_return(self, member_id: str, drift_from_ms: int, at: datetime) -> None:
        """The member was active again after a drift episode: counted once per episode."""
        try:
            await self.returns.insert_one(
                {
                    "_id": f"{member_id}:{drift_from_ms}",
                    "member_id": member_id,
                    "at_ms": epoch_ms(at),
                }
            )
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise

    async def count_returns_since(self, since: datetime) -> int:
        return await self.returns.count_documents({"at_ms": {"$gte": epoch_ms(since)}})

    # -- posts, comments, reactions ---------------------------------------------------------------

    async def insert(self, collection_name: str, doc: Doc, events: list[CloudEvent]) -> bool:
        """Insert a new document with its first events; False when its id exists already."""
        try:
            await getattr(self, collection_name).insert_one(with_outbox(doc, events))
            return True
        except Exception as exc:
            if is_duplicate_key(exc):
                return False
            raise

    async def post(self, post_id: str) -> Doc | None:
        return await self.posts.find_one({"_id": post_id}, NO_OUTBOX)

    async def comment(self, comment_id: str) -> Doc | None:
        return await self.comments.find_one({"_id": comment_id}, NO_OUTBOX)

    async def reaction(self, reaction_id: str) -> Doc | None:
        return await self.reactions.find_one({"_id": reaction_id}, NO_OUTBOX)

    async def comments_of(self, post_id: str, limit: int, after: Cursor | None) -> list[Doc]:
        """Oldest first, from after the (created_ms, _id) `after`."""
        query: Doc = {"post_id": post_id}
        if after is not None:
            ms, last_id = after
            query["$or"] = [
                {"created_ms": {"$gt": ms}},
                {"created_ms": ms, "_id": {"$gt": last_id}},
            ]
        order = [("created_ms", 1), ("_id", 1)]
        return await self.comments.find(query, NO_OUTBOX).sort(order).limit(limit).to_list(None)

    async def reaction_counts(self, post_id: str) -> dict[str, int]:
        pipeline: list[Doc] = [
            {"$match": {"post_id": post_id}},
            {"$group": {"_id": "$reaction", "n": {"$sum": 1}}},
        ]
        rows = await (await self.reactions.aggregate(pipeline)).to_list(None)
        return {row["_id"]: int(row["n"]) for row in rows}

    async def comment_count(self, post_id: str) -> int:
        return await self.comments.count_documents({"post_id": post_id})

    async def accept_answer(self, post_id: str, accepted: Doc, event: CloudEvent) -> bool:
        """Record the accepted answer once per question (the guard), with answer-accepted."""
        result = await self.posts.update_one(
            {"_id": post_id, "accepted_comment_id": {"$exists": False}},
            update_with_outbox({"$set": accepted}, [event]),
        )
        return result.modified_count == 1

    async def note_first_answers(self, answers: dict[str, int]) -> None:
        """Earliest comment by another member per post (epoch ms): `$min`, so order-free."""
        ops = [
            UpdateOne({"_id": pid}, {"$min": {"first_answer_ms": ms}})
            for pid, ms in answers.items()
        ]
        if ops:
            await self.posts.bulk_write(ops, ordered=False)

    async def has_answer(self, post_id: str, asker_id: str) -> bool:
        found = await self.comments.find_one(
            {"post_id": post_id, "author_id": {"$ne": asker_id}}, {"_id": 1}
        )
        return found is not None

    async def open_questions(self, created_before: datetime) -> list[Doc]:
        """Questions old enough, with no answer seen yet and not yet reported as unanswered."""
        query: Doc = {
            "kind": "question",
            "created_ms": {"$lte": epoch_ms(created_before)},
            "first_answer_ms": {"$exists": False},
            "unanswered_ms": {"$exists": False},
            "author_id": {"$type": "string"},  # not `$ne: None`: nx-27017 matches missing fields
        }
        return await self.posts.find(query, NO_OUTBOX).to_list(None)

    async def flag_unanswered(self, post_id: str, now: datetime, event: CloudEvent) -> bool:
        result = await self.posts.update_one(
            {"_id": post_id, "unanswered_ms": {"$exists": False}},
            update_with_outbox({"$set": {"unanswered_ms": epoch_ms(now)}}, [event]),
        )
        return result.modified_count == 1

    async def count_posts_since(self, since: datetime, kind: str | None = None) -> int:
        query: Doc = {"created_ms": {"$gte": epoch_ms(since)}}
        if kind:
            query["kind"] = kind
        return await self.posts.count_documents(query)

    async def questions_since(self, since: datetime) -> list[Doc]:
        query = {"kind": "question", "created_ms": {"$gte": epoch_ms(since)}}
        return await self.posts.find(query, {"created_ms": 1, "first_answer_ms": 1}).to_list(None)

    # -- volunteer hours --------------------------------------------------------------------------

    async def hours_entry(self, entry_id: str) -> Doc | None:
        return await self.hours.find_one({"_id": entry_id}, NO_OUTBOX)

    async def decide_hours(self, entry_id: str, decision: Doc, events: list[CloudEvent]) -> bool:
        """pending → approved/rejected, once (the guard); an approval carries hours-approved."""
        result = await self.hours.update_one(
            {"_id": entry_id, "status": "pending"}, update_with_outbox({"$set": decision}, events)
        )
        return result.modified_count == 1

    async def hours_of(
        self, member_id: str, status: str | None, limit: int, before: Cursor | None
    ) -> list[Doc]:
        """Newest first, from before the (created_ms, _id) `before`."""
        query: Doc = {"member_id": member_id}
        if status:
            query["status"] = status
        if before is not None:
            ms, last_id = before
            query["$or"] = [
                {"created_ms": {"$lt": ms}},
                {"created_ms": ms, "_id": {"$lt": last_id}},
            ]
        order = [("created_ms", DESCENDING), ("_id", DESCENDING)]
        return await self.hours.find(query, NO_OUTBOX).sort(order).limit(limit).to_list(None)

    async def hours_totals(self, member_id: str) -> dict[str, float]:
        pipeline: list[Doc] = [
            {"$match": {"member_id": member_id}},
            {"$group": {"_id": "$status", "hours": {"$sum": "$hours"}}},
        ]
        rows = await (await self.hours.aggregate(pipeline)).to_list(None)
        return {row["_id"]: float(row["hours"]) for row in rows}

    # -- stats ------------------------------------------------------------------------------------

    async def count_members(self, query: Doc) -> int:
        return await self.members.count_documents(query)

    # -- member-left ------------------------------------------------------------------------------

    async def post_ids_of(self, member_id: str) -> list[str]:
        return [d["_id"] async for d in self.posts.find({"author_id": member_id}, {"_id": 1})]

    async def erase_member(self, member_id: str) -> None:
        """Forget a member's personal data.

        Posts and comments stay as anonymous tombstones (no author, title, body or tags) so
        that others' answers and the community figures keep their history; hours entries,
        activity, level and drift records go.
        """
        removed = {"title": "", "body": "", "tags": [], "author_id": None}
        await self.posts.update_many({"author_id": member_id}, {"$set": removed})
        await self.posts.update_many(
            {"accepted_answerer_id": member_id}, {"$set": {"accepted_answerer_id": None}}
        )
        await self.comments.update_many(
            {"author_id": member_id}, {"$set": {"body": "", "author_id": None}}
        )
        await self.comments.update_many(
            {"post_author_id": member_id}, {"$set": {"post_author_id": None}}
        )
        await self.reactions.update_many({"member_id": member_id}, {"$set": {"member_id": None}})
        await self.reactions.update_many(
            {"post_author_id": member_id}, {"$set": {"post_author_id": None}}
        )
        await self.hours.delete_many({"member_id": member_id})
        await self.hours.update_many({"decided_by": member_id}, {"$set": {"decided_by": None}})
        await self.activity.delete_many({"member_id": member_id})
        await self.standing.delete_many({"_id": member_id})
        await self.returns.delete_many({"member_id": member_id})


def _bucket_id(fact: domain.Fact) -> str:
    return f"{fact.member_id}:{domain.day_of(fact.at).date().isoformat()}"


def _bucket_args(bucket_id: str, facts: list[domain.Fact], rules: domain.Rules) -> tuple[Doc, Doc]:
    """(filter, update) adding facts of one member and day to their bucket, guarded by fact id.

    Counters are flat fields (`n_post`, not `n.post`): nx-27017 stores a dotted `$inc` of an
    upsert that inserts as a literal key "n.post".
    """
    first = facts[0]
    keys = [safe_key(f.id) for f in facts]
    inc: dict[str, float] = defaultdict(float)
    for f in facts:
        inc["points"] += f.points(rules)
        inc["mass"] += domain.bucket_mass(f, rules)
        inc[f"n_{f.kind}"] += 1
        if f.kind == "hour":
            inc["hours"] += f.amount
    update: Doc = {
        "$inc": dict(inc),
        "$set": {f"applied.{k}": 1 for k in keys},
        "$setOnInsert": {"member_id": first.member_id, "day_ms": epoch_ms(domain.day_of(first.at))},
    }
    participation = [epoch_ms(f.at) for f in facts if f.participation]
    if participation:
        update["$max"] = {"last_ms": max(participation)}
    guard: Doc = {"_id": bucket_id, **{f"applied.{k}": {"$exists": False} for k in keys}}
    return guard, update


def _bucket_update(bucket_id: str, facts: list[domain.Fact], rules: domain.Rules) -> UpdateOne:
    guard, update = _bucket_args(bucket_id, facts, rules)
    return UpdateOne(guard, update, upsert=True)
