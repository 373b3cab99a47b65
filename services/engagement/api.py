"""Engagement HTTP routes for what members write: posts, comments, reactions, accepted answers."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from services.engagement.context import (
    Engagement,
    Strict,
    active_member,
    engagement_of,
    rendered,
)
from services.engagement.store import Doc, from_ms, page_cursor
from shared.events import (
    AnswerAccepted,
    CommentAdded,
    PostCreated,
    PostKind,
    ReactionAdded,
    new_event,
)
from shared.http import ApiError, new_id, not_found, require
from shared.limits import Ident, Title, line, text
from shared.query import ORDER_KEY_RE, decode_cursor, order_key
from shared.store import epoch_ms

router = APIRouter(prefix="/v1", tags=["engagement"])
#: The scopes of these routes (shared/keys.py says what each allows).
READ, WRITE = "engagement:read", "engagement:write"
FORMER_MEMBER = "former member"


#: A post's tag as typed; an empty one is dropped (as before bounds existed), not refused.
PostTag = line(50, min_length=0)
#: A reaction is one word or emoji: one line, no spaces, short.
Reaction = Annotated[line(32), Field(pattern=r"^\S+$", examples=["thanks"])]
PostBody = text(20_000)
CommentBody = text(10_000, min_length=1)


class PostIn(Strict):
    author_id: Ident
    kind: PostKind = "post"
    title: Title
    body: PostBody = ""
    tags: list[PostTag] = Field(default_factory=list, max_length=20)


class CommentIn(Strict):
    author_id: Ident
    body: CommentBody


class ReactionIn(Strict):
    member_id: Ident
    reaction: Reaction


class AcceptIn(Strict):
    comment_id: Ident
    by: Ident = Field(description="the asker of the question")


class PostOut(BaseModel):
    post_id: str
    author_id: str | None
    author_name: str
    kind: str
    title: str
    body: str
    tags: list[str]
    created_at: datetime
    comments: int = 0
    reactions: dict[str, int] = Field(default_factory=dict)
    accepted_comment_id: str | None = None


class CommentOut(BaseModel):
    comment_id: str
    post_id: str
    author_id: str | None
    author_name: str
    body: str
    created_at: datetime


class CommentList(BaseModel):
    items: list[CommentOut]
    next_cursor: str | None = None


class ReactionOut(BaseModel):
    post_id: str
    member_id: str | None
    reaction: str
    created_at: datetime


class AcceptedOut(BaseModel):
    post_id: str
    comment_id: str
    asker_id: str
    answerer_id: str | None
    seconds_to_answer: int


def _name(member: Doc | None) -> str:
    if member is None or member.get("status") != "active":
        return FORMER_MEMBER
    return str(member.get("display_name") or FORMER_MEMBER)


async def _post_out(e: Engagement, post: Doc) -> PostOut:
    author = await e.store.member(post["author_id"]) if post.get("author_id") else None
    return PostOut(
        post_id=post["_id"],
        author_id=post.get("author_id"),
        author_name=_name(author),
        kind=post["kind"],
        title=post["title"],
        body=post["body"],
        tags=post.get("tags", []),
        created_at=from_ms(post["created_ms"]),  # type: ignore[arg-type]
        comments=await e.store.comment_count(post["_id"]),
        reactions=await e.store.reaction_counts(post["_id"]),
        accepted_comment_id=post.get("accepted_comment_id"),
    )


async def _existing_post(e: Engagement, post_id: str) -> Doc:
    post = await e.store.post(post_id)
    if post is None or not post.get("author_id"):  # an erased member's post is a tombstone
        raise not_found("post", post_id)
    return post


# -- posts ----------------------------------------------------------------------------------------


@router.post("/posts", status_code=201, response_model=PostOut, dependencies=[require(WRITE)])
async def create_post(body: PostIn, request: Request) -> PostOut:
    """Publish a post, question, story or event report (emits post-created)."""
    e = engagement_of(request)
    author = await active_member(e, body.author_id)
    now = e.clock()
    post_id = new_id(request)
    tags = sorted({t.strip().lower() for t in body.tags if t.strip()})
    event = new_event(
        PostCreated(
            post_id=post_id,
            author_id=body.author_id,
            kind=body.kind,
            title=body.title,
            tags=tags,
            created_at=now,
        ),
        time=now,
    )
    doc = {
        "_id": post_id,
        "author_id": body.author_id,
        "kind": body.kind,
        "title": body.title,
        "body": body.body,
        "tags": tags,
        "region": author.get("region"),
        "created_ms": epoch_ms(now),
    }
    if body.kind == "question":
        doc["open"] = 1  # until answered or reported unanswered (the job's index)
    if not await e.store.insert("posts", doc, [event]):
        # The same request again (its first answer was lost): the post it made is the answer.
        stored = await e.store.post(post_id)
        if stored is not None:
            return await _post_out(e, stored)
    e.relay.kick(e.store.posts, post_id)
    return PostOut(
        post_id=post_id,
        author_id=body.author_id,
        author_name=_name(author),
        kind=body.kind,
        title=body.title,
        body=body.body,
        tags=tags,
        created_at=from_ms(epoch_ms(now)),
    )  # type: ignore[arg-type]


@router.get("/posts/{post_id}", response_model=PostOut, dependencies=[require(READ)])
async def get_post(post_id: str, request: Request) -> PostOut:
    e = engagement_of(request)
    post = await e.store.post(post_id)
    if post is None:
        raise not_found("post", post_id)
    return await _post_out(e, post)


@router.post(
    "/posts/{post_id}/comments",
    status_code=201,
    response_model=CommentOut,
    dependencies=[require(WRITE)],
)
async def add_comment(post_id: str, body: CommentIn, request: Request) -> CommentOut:
    """Comment on a post; on a question, a comment by another member is an answer."""
    e = engagement_of(request)
    post = await _existing_post(e, post_id)
    author = await active_member(e, body.author_id)
    now = e.clock()
    comment_id = new_id(request)
    event = new_event(
        CommentAdded(
            comment_id=comment_id,
            post_id=post_id,
            author_id=body.author_id,
            post_author_id=post["author_id"],
            created_at=now,
        ),
        time=now,
    )
    doc = {
        "_id": comment_id,
        "post_id": post_id,
        "author_id": body.author_id,
        "post_author_id": post["author_id"],
        "body": body.body,
        "created_ms": epoch_ms(now),
        "order_key": order_key(epoch_ms(now), comment_id),
    }
    if not await e.store.insert("comments", doc, [event]):
        # The same request again (its first answer was lost): its comment is the answer.
        doc = await e.store.comment(comment_id) or doc
        now = from_ms(doc["created_ms"])  # type: ignore[assignment]
    e.relay.kick(e.store.comments, comment_id)
    return CommentOut(
        comment_id=comment_id,
        post_id=post_id,
        author_id=body.author_id,
        author_name=_name(author),
        body=body.body,
        created_at=from_ms(epoch_ms(now)),
    )  # type: ignore[arg-type]


@router.get("/posts/{post_id}/comments", response_model=CommentList, dependencies=[require(READ)])
async def list_comments(
    post_id: str,
    request: Request,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> CommentList:
    e = engagement_of(request)
    if await e.store.post(post_id) is None:
        raise not_found("post", post_id)
    after = decode_cursor(cursor, ORDER_KEY_RE) if cursor else None
    docs = await e.store.comments_of(post_id, limit, after)
    authors = await e.store.members_by_id(
        d["author_id"] for d in docs if isinstance(d.get("author_id"), str)
    )

    def render(d: Doc) -> CommentOut:
        return CommentOut(
            comment_id=d["_id"],
            post_id=post_id,
            author_id=d.get("author_id"),
            author_name=_name(authors.get(d.get("author_id") or "")),
            body=d["body"],
            created_at=from_ms(d["created_ms"]),
        )

    items = rendered(docs, render, "comment")
    next_cursor = page_cursor(docs[-1]) if len(docs) == limit else None
    return CommentList(items=items, next_cursor=next_cursor)


@router.post(
    "/posts/{post_id}/reactions",
    status_code=201,
    response_model=ReactionOut,
    dependencies=[require(WRITE)],
)
async def add_reaction(
    post_id: str, body: ReactionIn, request: Request, response: Response
) -> ReactionOut:
    """React to a post: once per member, post and reaction (a repeat answers 200, no new event)."""
    e = engagement_of(request)
    post = await _existing_post(e, post_id)
    await active_member(e, body.member_id)
    reaction_id = (
        "r_"
        + hashlib.sha256(f"{post_id}\n{body.member_id}\n{body.reaction}".encode()).hexdigest()[:32]
    )
    existing = await e.store.reaction(reaction_id)
    if existing is None:
        now = e.clock()
        event = new_event(
            ReactionAdded(
                post_id=post_id,
                member_id=body.member_id,
                post_author_id=post["author_id"],
                reaction=body.reaction,
                created_at=now,
            ),
            time=now,
        )
        doc = {
            "_id": reaction_id,
            "post_id": post_id,
            "member_id": body.member_id,
            "post_author_id": post["author_id"],
            "reaction": body.reaction,
            "created_ms": epoch_ms(now),
        }
        if await e.store.insert("reactions", doc, [event]):
            e.relay.kick(e.store.reactions, reaction_id)
            return ReactionOut(
                post_id=post_id,
                member_id=body.member_id,
                reaction=body.reaction,
                created_at=from_ms(doc["created_ms"]),
            )  # type: ignore[arg-type]
        existing = await e.store.reaction(reaction_id)  # a concurrent twin won the insert
    assert existing is not None
    response.status_code = 200
    return ReactionOut(
        post_id=post_id,
        member_id=existing["member_id"],
        reaction=existing["reaction"],
        created_at=from_ms(existing["created_ms"]),
    )  # type: ignore[arg-type]


@router.post("/posts/{post_id}/accept", response_model=AcceptedOut, dependencies=[require(WRITE)])
async def accept_answer(post_id: str, body: AcceptIn, request: Request) -> AcceptedOut:
    """The asker accepts a comment as the answer to their question, once (answer-accepted)."""
    e = engagement_of(request)
    post = await _existing_post(e, post_id)
    await active_member(e, body.by)
    if post["kind"] != "question":
        raise ApiError(422, "not_a_question", f"post {post_id} is a {post['kind']}, not a question")
    if body.by != post["author_id"]:
        raise ApiError(
            403, "forbidden", "only the member who asked the question may accept an answer"
        )
    comment = await e.store.comment(body.comment_id)
    if comment is None or comment["post_id"] != post_id:
        raise ApiError(
            422, "unknown_comment", f"comment {body.comment_id} is not on post {post_id}"
        )
    if comment.get("author_id") in (None, post["author_id"]):
        raise ApiError(422, "not_an_answer", "an answer must be a comment by another member")
    seconds = max((comment["created_ms"] - post["created_ms"]) // 1000, 0)
    out = AcceptedOut(
        post_id=post_id,
        comment_id=comment["_id"],
        asker_id=post["author_id"],
        answerer_id=comment["author_id"],
        seconds_to_answer=seconds,
    )
    if not post.get("accepted_comment_id"):
        now = e.clock()
        event = new_event(
            AnswerAccepted(
                post_id=post_id,
                comment_id=comment["_id"],
                asker_id=post["author_id"],
                answerer_id=comment["author_id"],
                seconds_to_answer=seconds,
            ),
            time=now,
        )
        accepted = {
            "accepted_comment_id": comment["_id"],
            "accepted_answerer_id": comment["author_id"],
            "accepted_ms": epoch_ms(now),
            "seconds_to_answer": seconds,
        }
        if await e.store.accept_answer(post_id, accepted, event):
            e.relay.kick(e.store.posts, post_id)
            return out
        post = await e.store.post(post_id) or post
    if post.get("accepted_comment_id") == comment["_id"]:
        return out  # accepting the same answer again changes nothing
    raise ApiError(
        422,
        "already_accepted",
        f"question {post_id} already has an accepted answer ({post.get('accepted_comment_id')})",
    )
