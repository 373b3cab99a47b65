"""The rules of what members contribute: posts, comments, reactions, accepted answers, hours.

Pure: no I/O, the time is passed in. Each function takes what was read (documents of the
projection and of the contributions) and returns the new state — the document to write, or the
fields that change — with the event data it raises; the use cases (usecases.py) read, call
these, and write the result with its events through their unit of work. A refusal is raised as
`Refused` (or `Forbidden`, `Conflict`, `NotFound`), which the HTTP routes map to 4xx.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from shared.clock import epoch_ms
from shared.documents import Doc
from shared.events import (
    AnswerAccepted,
    CommentAdded,
    HoursApproved,
    PostCreated,
    PostKind,
    ReactionAdded,
)
from shared.query import order_key
from shared.tags import normalise_tags

#: The reactions members may give unless SARAFAN_ENGAGEMENT_REACTIONS says otherwise.
DEFAULT_REACTIONS: tuple[str, ...] = ("+1", "like", "heart", "thanks", "👍", "❤️", "🎉", "🙏")
#: Variation selectors and skin-tone modifiers: how an emoji looks, not which it is.
EMOJI_PRESENTATION = re.compile("[\ufe0e\ufe0f\U0001f3fb-\U0001f3ff]")
#: Who may decide on someone else's volunteer hours (from the projected roles).
DECIDER_ROLES = ("coordinator", "staff")


class Refused(ValueError):
    """A request the rules refuse (HTTP 422 unless a subclass says otherwise)."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


class Forbidden(Refused):
    """The member named may not do this (HTTP 403)."""

    def __init__(self, message: str) -> None:
        super().__init__("forbidden", message)


class Conflict(Refused):
    """It was done otherwise already (HTTP 409)."""


class NotFound(LookupError):
    """What the request names does not exist (HTTP 404)."""

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident}")
        self.what, self.ident = what, ident


# -- members -----------------------------------------------------------------------------------


def active_member(member: Doc | None, member_id: str) -> Doc:
    """The member as projected, who must be in the community now to write anything."""
    if member is None:
        raise Refused("unknown_member", f"member {member_id} is not known to engagement")
    if member.get("status") != "active":
        raise Refused("member_left", f"member {member_id} has left the community")
    return member


def existing_post(post: Doc | None, post_id: str) -> Doc:
    """A post that takes comments, reactions and answers: an erased member's post is a
    tombstone (no author) and takes none."""
    if post is None or not post.get("author_id"):
        raise NotFound("post", post_id)
    return post


# -- posts, comments, reactions ----------------------------------------------------------------


def new_post(
    post_id: str, author: Doc, kind: PostKind, title: str, body: str, tags: list[str], now: datetime
) -> tuple[Doc, PostCreated]:
    """A post, question, story or event report, and its post-created."""
    tags = normalise_tags(tags)
    doc: Doc = {
        "_id": post_id,
        "author_id": author["_id"],
        "kind": kind,
        "title": title,
        "body": body,
        "tags": tags,
        "region": author.get("region"),
        "created_ms": epoch_ms(now),
    }
    if kind == "question":
        doc["open"] = 1  # until answered or reported unanswered (the job's index)
    created = PostCreated(
        post_id=post_id, author_id=author["_id"], kind=kind, title=title, tags=tags, created_at=now
    )
    return doc, created


def new_comment(
    comment_id: str, post: Doc, author_id: str, body: str, now: datetime
) -> tuple[Doc, CommentAdded]:
    """A comment and its comment-added; on a question, one by another member is an answer."""
    at = epoch_ms(now)
    doc = {
        "_id": comment_id,
        "post_id": post["_id"],
        "author_id": author_id,
        "post_author_id": post["author_id"],
        "body": body,
        "created_ms": at,
        "order_key": order_key(at, comment_id),
    }
    added = CommentAdded(
        comment_id=comment_id,
        post_id=post["_id"],
        author_id=author_id,
        post_author_id=post["author_id"],
        created_at=now,
    )
    return doc, added


def reaction_form(reaction: str) -> str:
    """What makes two reactions the same one: case, and the marks that change how an emoji
    looks but not which emoji it is (variation selectors, skin tones), do not count."""
    return EMOJI_PRESENTATION.sub("", reaction).casefold()


def allowed_reaction(raw: str, allowed: Sequence[str]) -> str:
    """The reaction as configured (SARAFAN_ENGAGEMENT_REACTIONS); anything else is refused with
    the list of those allowed. A closed set: twenty invented strings are not twenty reactions."""
    wanted = reaction_form(raw)
    for reaction in allowed:
        if reaction_form(reaction) == wanted:
            return reaction
    raise Refused(
        "unknown_reaction",
        f"this is not one of the community's reactions: {' '.join(allowed)}",
        details={"allowed": list(allowed)},
    )


def reaction_id(post_id: str, member_id: str) -> str:
    """One reaction per member and post: the id says whose, on which post."""
    digest = hashlib.sha256(f"{post_id}\n{member_id}".encode()).hexdigest()
    return "r1_" + digest[:32]


def same_reaction(existing: Doc, reaction: str) -> Doc:
    """A member's reaction to a post, asked for again: the same one is no change; another is
    refused (one reaction per member and post, so an author earns one point per member)."""
    if existing["reaction"] == reaction:
        return existing
    raise Conflict(
        "already_reacted",
        f"member {existing['member_id']} already reacted to post {existing['post_id']} "
        f"with {existing['reaction']!r}: one reaction per member and post",
        details={"reaction": existing["reaction"]},
    )


def new_reaction(
    post: Doc, member_id: str, reaction: str, now: datetime
) -> tuple[Doc, ReactionAdded]:
    """A member's one reaction to a post and its reaction-added (one event per member and post,
    so no consumer can score a member's reactions to one post twice)."""
    doc = {
        "_id": reaction_id(post["_id"], member_id),
        "post_id": post["_id"],
        "member_id": member_id,
        "post_author_id": post["author_id"],
        "reaction": reaction,
        "created_ms": epoch_ms(now),
    }
    added = ReactionAdded(
        post_id=post["_id"],
        member_id=member_id,
        post_author_id=post["author_id"],
        reaction=reaction,
        created_at=now,
    )
    return doc, added


# -- accepted answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A question's accepted answer, as the asker is told."""

    post_id: str
    comment_id: str
    asker_id: str
    answerer_id: str | None
    seconds_to_answer: int


@dataclass(frozen=True)
class Acceptance:
    """What accepting an answer changes: the question's fields and answer-accepted; neither
    when this very answer is accepted already (accepting it again changes nothing)."""

    answer: Answer
    fields: Doc | None = None
    event: AnswerAccepted | None = None


def accept_answer(
    post: Doc, comment_id: str, comment: Doc | None, by: str, now: datetime
) -> Acceptance:
    """The asker accepts another member's comment on their question as its answer, once
    (`comment` is what was found under `comment_id`)."""
    post_id = post["_id"]
    if post["kind"] != "question":
        raise Refused("not_a_question", f"post {post_id} is a {post['kind']}, not a question")
    if by != post["author_id"]:
        raise Forbidden("only the member who asked the question may accept an answer")
    if comment is None or comment["post_id"] != post_id:
        raise Refused("unknown_comment", f"comment {comment_id} is not on post {post_id}")
    if comment.get("author_id") in (None, post["author_id"]):
        raise Refused("not_an_answer", "an answer must be a comment by another member")
    answer = Answer(
        post_id=post_id,
        comment_id=comment["_id"],
        asker_id=post["author_id"],
        answerer_id=comment["author_id"],
        seconds_to_answer=max((comment["created_ms"] - post["created_ms"]) // 1000, 0),
    )
    if post.get("accepted_comment_id"):
        return Acceptance(already_accepted(post, answer))
    fields = {
        "accepted_comment_id": answer.comment_id,
        "accepted_answerer_id": answer.answerer_id,
        "accepted_ms": epoch_ms(now),
        "seconds_to_answer": answer.seconds_to_answer,
    }
    event = AnswerAccepted(
        post_id=post_id,
        comment_id=answer.comment_id,
        asker_id=answer.asker_id,
        answerer_id=comment["author_id"],
        seconds_to_answer=answer.seconds_to_answer,
    )
    return Acceptance(answer, fields, event)


def already_accepted(post: Doc, answer: Answer) -> Answer:
    """A question has one accepted answer: the same one again is no change, another is refused."""
    if post.get("accepted_comment_id") == answer.comment_id:
        return answer
    raise Refused(
        "already_accepted",
        f"question {post['_id']} already has an accepted answer "
        f"({post.get('accepted_comment_id')})",
    )


# -- volunteer hours ---------------------------------------------------------------------------


def hours_entry(
    entry_id: str,
    member_id: str,
    hours: float,
    activity: str,
    day: date,
    note: str,
    now: datetime,
) -> Doc:
    """Volunteer hours recorded `pending`, for a coordinator or staff member to decide."""
    if day > (now + timedelta(days=1)).date():
        raise Refused("future_date", f"hours cannot be recorded for {day}, a future date")
    at = epoch_ms(now)
    return {
        "_id": entry_id,
        "member_id": member_id,
        "hours": hours,
        "activity": activity,
        "date": day.isoformat(),
        "note": note,
        "status": "pending",
        "created_ms": at,
        "order_key": order_key(at, entry_id),
    }


def decider(member: Doc, by: str, member_id: str) -> Doc:
    """A coordinator or staff member deciding on someone else's hours."""
    if not set(member.get("roles") or ()) & set(DECIDER_ROLES):
        raise Forbidden("only a coordinator or staff member may decide on hours")
    if by == member_id:
        raise Forbidden("a member cannot decide on their own hours")
    return member


def decide_hours(
    entry: Doc, by: str, status: str, reason: str, now: datetime
) -> tuple[Doc, list[HoursApproved]]:
    """pending → approved or rejected: the entry's changed fields, and hours-approved for an
    approval (the fact the consumer scores)."""
    decision: Doc = {
        "status": status,
        "decided_by": by,
        "decided_ms": epoch_ms(now),
        "reason": reason,
    }
    if status != "approved":
        return decision, []
    approved = HoursApproved(
        entry_id=entry["_id"],
        member_id=entry["member_id"],
        hours=entry["hours"],
        activity=entry["activity"],
        date=date.fromisoformat(entry["date"]),
        approved_by=by,
    )
    return decision, [approved]


def already_decided(entry: Doc, status: str) -> Doc:
    """An entry is decided once: the same decision again is no change, the other is refused."""
    if entry["status"] == status:
        return entry
    raise Conflict("already_decided", f"hours entry {entry['_id']} is already {entry['status']}")
