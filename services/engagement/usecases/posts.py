"""What members write: posts, comments, reactions and accepted answers (the rules are in
contributions.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.engagement import contributions as rules
from services.engagement.contributions import Answer
from services.engagement.repositories import EngagementUnitOfWork
from services.engagement.store import EngagementStore
from services.engagement.usecases.base import active_member, existing_post, inserted
from shared.clock import Clock
from shared.documents import Doc
from shared.events import PostKind, new_event


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


@dataclass(frozen=True)
class NewComment:
    comment_id: str
    post_id: str
    author_id: str
    body: str


@dataclass(frozen=True)
class NewReaction:
    post_id: str
    member_id: str
    reaction: str


@dataclass(frozen=True)
class AcceptAnswer:
    post_id: str
    comment_id: str
    by: str


class Posts:
    """Posts, comments, reactions and accepted answers: each one unit of work."""

    def __init__(
        self,
        store: EngagementStore,
        unit_of_work: Callable[[], EngagementUnitOfWork],
        clock: Clock,
        reactions: Sequence[str] = rules.DEFAULT_REACTIONS,
    ) -> None:
        self.store = store
        self.unit_of_work = unit_of_work
        self.clock = clock
        #: The reactions members may give (the community's setting).
        self.reactions = reactions

    async def create_post(self, cmd: NewPost) -> Posted:
        """Publish a post, question, story or event report (post-created)."""
        now = self.clock()
        async with self.unit_of_work() as uow:
            author = await active_member(self.store, cmd.author_id)
            doc, created = rules.new_post(
                cmd.post_id, author, cmd.kind, cmd.title, cmd.body, cmd.tags, now
            )
            if not await inserted(uow, uow.posts.insert(doc, [new_event(created, time=now)])):
                stored = await self.store.post(cmd.post_id)
                if stored is not None:
                    return Posted(stored, author, created=False)
        return Posted(doc, author, created=True)

    async def add_comment(self, cmd: NewComment) -> tuple[Doc, Doc]:
        """Comment on a post (comment-added); the stored comment and its author."""
        now = self.clock()
        async with self.unit_of_work() as uow:
            post = await existing_post(self.store, cmd.post_id)
            author = await active_member(self.store, cmd.author_id)
            doc, added = rules.new_comment(cmd.comment_id, post, cmd.author_id, cmd.body, now)
            if not await inserted(uow, uow.posts.insert_comment(doc, [new_event(added, time=now)])):
                doc = await self.store.comment(cmd.comment_id) or doc
        return doc, author

    async def add_reaction(self, cmd: NewReaction) -> tuple[Doc, bool]:
        """React to a post with one of the allowed reactions, once per member and post
        (reaction-added): the reaction stored, and whether this call made it (the same reaction
        again changes nothing; another is refused)."""
        now = self.clock()
        async with self.unit_of_work() as uow:
            reaction = rules.allowed_reaction(cmd.reaction, self.reactions)
            post = await existing_post(self.store, cmd.post_id)
            await active_member(self.store, cmd.member_id)
            existing = await self.store.reaction(rules.reaction_id(cmd.post_id, cmd.member_id))
            if existing is not None:
                return rules.same_reaction(existing, reaction), False
            doc, added = rules.new_reaction(post, cmd.member_id, reaction, now)
            if await inserted(uow, uow.posts.insert_reaction(doc, [new_event(added, time=now)])):
                return doc, True
        twin = await self.store.reaction(doc["_id"])  # a concurrent request won the insert
        assert twin is not None
        return rules.same_reaction(twin, reaction), False

    async def accept_answer(self, cmd: AcceptAnswer) -> Answer:
        """The asker accepts a comment as the answer to their question, once
        (answer-accepted)."""
        now = self.clock()
        async with self.unit_of_work() as uow:
            post = await existing_post(self.store, cmd.post_id)
            await active_member(self.store, cmd.by)
            comment = await self.store.comment(cmd.comment_id)
            accepting = rules.accept_answer(post, cmd.comment_id, comment, cmd.by, now)
            if accepting.fields is None or accepting.event is None:
                return accepting.answer  # this answer is accepted already: nothing changes
            event = new_event(accepting.event, time=now)
            step = uow.posts.accept_answer(cmd.post_id, accepting.fields, event)
            if (await uow.commit(step)).modified_count == 1:
                return accepting.answer
        # Another request accepted an answer in between: the same one is fine, another is not.
        return rules.already_accepted(await self.store.post(cmd.post_id) or post, accepting.answer)
