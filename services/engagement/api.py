"""Engagement HTTP routes for what members write: posts, comments, reactions, accepted answers.

Each route parses its request, calls its use case (`Posts`, usecases/posts.py: it opens and
commits its own unit of work) through the service's context (`EngagementDep`) and renders the
answer; a refusal of the rules becomes its 4xx (context.refusals)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from services.engagement import usecases
from services.engagement.context import Engagement, EngagementDep, Strict, refusals, rendered
from shared.clock import from_ms
from shared.documents import Doc
from shared.events import PostKind
from shared.http import acting_member, error_responses, new_id, not_found, require
from shared.limits import Ident, Title, line, text
from shared.query import ORDER_KEY_RE, decode_cursor, encode_cursor

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


async def _post_out(
    e: Engagement, post: Doc, author: Doc | None = None, fresh: bool = False
) -> PostOut:
    """A post as shown; a `fresh` one (just made) has no comments or reactions to count yet."""
    if author is None and post.get("author_id"):
        author = await e.store.member(post["author_id"])
    return PostOut(
        post_id=post["_id"],
        author_id=post.get("author_id"),
        author_name=_name(author),
        kind=post["kind"],
        title=post["title"],
        body=post["body"],
        tags=post.get("tags", []),
        created_at=from_ms(post["created_ms"]),
        comments=0 if fresh else await e.store.comment_count(post["_id"]),
        reactions={} if fresh else await e.store.reaction_counts(post["_id"]),
        accepted_comment_id=post.get("accepted_comment_id"),
    )


# -- posts ----------------------------------------------------------------------------------------


@router.post("/posts", status_code=201, response_model=PostOut, dependencies=[require(WRITE)])
async def create_post(body: PostIn, request: Request, e: EngagementDep) -> PostOut:
    """Publish a post, question, story or event report (emits post-created)."""
    author = acting_member(request, body.author_id, "author_id")
    cmd = usecases.NewPost(post_id=new_id(request), **{**body.model_dump(), "author_id": author})
    with refusals():
        posted = await e.posts.create_post(cmd)
    if posted.created:
        return await _post_out(e, posted.post, posted.author, fresh=True)
    # The same request again (its first answer was lost): the post it made is the answer.
    return await _post_out(e, posted.post)


@router.get("/posts/{post_id}", response_model=PostOut, dependencies=[require(READ)])
async def get_post(post_id: str, e: EngagementDep) -> PostOut:
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
async def add_comment(
    post_id: str, body: CommentIn, request: Request, e: EngagementDep
) -> CommentOut:
    """Comment on a post; on a question, a comment by another member is an answer."""
    author = acting_member(request, body.author_id, "author_id")
    cmd = usecases.NewComment(
        comment_id=new_id(request), post_id=post_id, **{**body.model_dump(), "author_id": author}
    )
    with refusals():
        comment, author = await e.posts.add_comment(cmd)
    return CommentOut(
        comment_id=cmd.comment_id,
        post_id=post_id,
        author_id=cmd.author_id,
        author_name=_name(author),
        body=cmd.body,
        created_at=from_ms(comment["created_ms"]),
    )


@router.get("/posts/{post_id}/comments", response_model=CommentList, dependencies=[require(READ)])
async def list_comments(
    post_id: str,
    e: EngagementDep,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> CommentList:
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
    next_cursor = encode_cursor(docs[-1]["order_key"]) if len(docs) == limit else None
    return CommentList(items=items, next_cursor=next_cursor)


@router.post(
    "/posts/{post_id}/reactions",
    status_code=201,
    response_model=ReactionOut,
    dependencies=[require(WRITE)],
    responses={
        200: {"model": ReactionOut, "description": "the same reaction again: nothing new"},
        **error_responses(
            {409: {"already_reacted": "member m_01 already reacted to post p_01 with 'like'"}}
        ),
    },
)
async def add_reaction(
    post_id: str, body: ReactionIn, request: Request, response: Response, e: EngagementDep
) -> ReactionOut:
    """React to a post with one of the community's reactions, once per member and post: the
    same reaction again answers 200 (no new event), another one 409 `already_reacted`, one not
    allowed 422 `unknown_reaction` with the allowed list."""
    member = acting_member(request, body.member_id)
    cmd = usecases.NewReaction(post_id=post_id, **{**body.model_dump(), "member_id": member})
    with refusals():
        reaction, created = await e.posts.add_reaction(cmd)
    if not created:
        response.status_code = 200
    return ReactionOut(
        post_id=post_id,
        member_id=reaction["member_id"],
        reaction=reaction["reaction"],
        created_at=from_ms(reaction["created_ms"]),
    )


@router.post("/posts/{post_id}/accept", response_model=AcceptedOut, dependencies=[require(WRITE)])
async def accept_answer(
    post_id: str, body: AcceptIn, request: Request, e: EngagementDep
) -> AcceptedOut:
    """The asker accepts a comment as the answer to their question, once (answer-accepted)."""
    by = acting_member(request, body.by, "by")
    cmd = usecases.AcceptAnswer(post_id=post_id, comment_id=body.comment_id, by=by)
    with refusals():
        answer = await e.posts.accept_answer(cmd)
    return AcceptedOut(**asdict(answer))
