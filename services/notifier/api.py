"""Notifier HTTP routes: a member's inbox and preferences, and the delivery log.

Thin adapters: parse and bound the request, call the use case (a method of `ctx.use_cases`,
usecases.py), map its errors and shape the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from services.notifier.context import NotifierContext, NotifierDep
from services.notifier.domain import Preferences
from services.notifier.usecases import MemberNotFound
from shared.clock import from_ms
from shared.http import ApiError, acting_member, not_found, require
from shared.query import CURSOR_MAX, ORDER_KEY_RE, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1", tags=["notifier"])
#: The scopes of these routes (shared/keys.py says what each allows).
READ, WRITE = "notifier:read", "notifier:write"
T = TypeVar("T")

Status = Literal["pending", "deferred", "sending", "delivered", "failed", "cancelled"]
#: Member ids as the members service hands them out (shared.limits.Ident): anything else is a
#: 422, not a lookup.
ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
MemberId = Annotated[
    str, Path(min_length=1, max_length=100, pattern=ID_PATTERN, description="a member's id")
]
#: A cursor is the base64 of an order key (about 70 characters), bounded as the codec bounds it.
Cursor = Annotated[
    str | None, Query(max_length=CURSOR_MAX, description="next_cursor of the previous page")
]


def _after(cursor: str | None) -> str | None:
    """The order key a `next_cursor` holds (422 `invalid_cursor` for one we did not hand out)."""
    return decode_cursor(cursor, ORDER_KEY_RE) if cursor else None


def _next_cursor(docs: list[dict[str, Any]], limit: int) -> str | None:
    """Opaque: the order key (created time, then id) of the last item of a full page."""
    return encode_cursor(str(docs[-1]["order_key"])) if len(docs) >= limit else None


def _missing(exc: MemberNotFound) -> ApiError:
    return not_found("member", exc.member_id)


def _when(ms: Any) -> datetime | None:
    return from_ms(ms) if isinstance(ms, int | float) else None


def _readable(
    ctx: NotifierContext,
    collection: str,
    docs: Iterable[dict[str, Any]],
    convert: Callable[..., T],
) -> list[T]:
    """The documents of a page a client can be shown. One that cannot be read (written by
    hand, by an old version, a text that no longer renders) is left out, logged by id and
    counted (`sarafan_documents_skipped_total`), so it never takes the whole list down."""
    items: list[T] = []
    for doc in docs:
        try:
            items.append(convert(doc))
        except Exception as exc:
            ctx.skipped.skip(collection, doc.get("_id"), exc, "list")
    return items


class InboxItem(BaseModel):
    notification_id: str
    template: str
    category: str
    title: str
    body: str
    created_at: datetime
    read: bool = False
    cause_event_id: str
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="ids a client acts on: an activity's `activity_id`; a sign-up's "
        "`signup_id`, `activity_id`, `shift_id` and `actions` (a reminder offers `confirm`, "
        '"I\'m coming", and `cancel`, "I can\'t": the activities service\'s endpoints)',
    )


class Inbox(BaseModel):
    items: list[InboxItem]
    next_cursor: str | None = None


@router.get("/members/{member_id}/inbox", response_model=Inbox, dependencies=[require(READ)])
async def inbox(
    member_id: MemberId,
    request: Request,
    ctx: NotifierDep,
    limit: int = Query(50, ge=1, le=200),
    cursor: Cursor = None,
) -> Inbox:
    """The member's in-app messages, newest first.

    Texts are rendered now, with the names the projection has now: a member named in a
    message (a commenter, an asker) and erased since is no longer named (docs/notifier.md).
    A key bound to a member reads that member's inbox only.
    """
    member_id = acting_member(request, member_id)
    page = await ctx.use_cases.inbox(member_id, limit, _after(cursor))

    def item(d: dict[str, Any]) -> InboxItem:
        title, body = page.text(d)
        return InboxItem(
            notification_id=d["_id"],
            read=bool(d.get("read")),
            title=title,
            body=body,
            data=dict(d.get("data") or {}),
            **{k: d[k] for k in ("template", "category", "created_at", "cause_event_id")},
        )

    items = _readable(ctx, "deliveries", page.docs, item)
    return Inbox(items=items, next_cursor=_next_cursor(page.docs, limit))


class MemberPreferences(Preferences):
    member_id: str


@router.get(
    "/members/{member_id}/preferences",
    response_model=MemberPreferences,
    dependencies=[require(READ)],
)
async def get_preferences(
    member_id: MemberId, request: Request, ctx: NotifierDep
) -> MemberPreferences:
    """The member's notification preferences (the defaults until they set any)."""
    member_id = acting_member(request, member_id)
    try:
        prefs = await ctx.use_cases.preferences(member_id)
    except MemberNotFound as exc:
        raise _missing(exc) from None
    return MemberPreferences(member_id=member_id, **prefs.model_dump())


@router.put(
    "/members/{member_id}/preferences",
    response_model=MemberPreferences,
    dependencies=[require(WRITE)],
)
async def put_preferences(
    member_id: MemberId, body: Preferences, request: Request, ctx: NotifierDep
) -> MemberPreferences:
    """Replace the member's preferences; fields left out take their defaults.

    Bounded and strict: each channel once (three at most), known categories with JSON
    booleans, whole-number hours 0–23, quiet hours as local times ("22:00"), a rate limit of
    1–1000 an hour or null; anything else (an unknown field, `"18"` or `true` for an hour) is
    a 422 and nothing is stored.
    """
    member_id = acting_member(request, member_id)
    try:
        chosen = await ctx.use_cases.set_preferences(member_id, body)
    except MemberNotFound as exc:
        raise _missing(exc) from None
    return MemberPreferences(member_id=member_id, **chosen.model_dump())


class Delivery(BaseModel):
    notification_id: str
    member_id: str
    channel: str
    template: str
    category: str
    status: str
    attempts: int
    cause_event_id: str
    cause_type: str
    created_at: datetime
    due_at: datetime | None = None
    deferred: str | None = None
    delivered_at: datetime | None = None
    last_error: str | None = None
    fallback_from: str | None = None
    fallback: str | None = None

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Delivery:
        return cls(
            notification_id=d["_id"],
            attempts=int(d.get("attempts", 0)),
            due_at=_when(d.get("due_ms")) if d["status"] in ("pending", "deferred") else None,
            delivered_at=_when(d.get("delivered_ms")),
            **{
                k: d.get(k)
                for k in (
                    "member_id",
                    "channel",
                    "template",
                    "category",
                    "status",
                    "cause_event_id",
                    "cause_type",
                    "created_at",
                    "deferred",
                    "last_error",
                    "fallback_from",
                    "fallback",
                )
            },
        )


class DeliveryLog(BaseModel):
    items: list[Delivery]
    next_cursor: str | None = None


@router.get("/notifications", response_model=DeliveryLog, dependencies=[require(READ)])
async def notifications(
    ctx: NotifierDep,
    member_id: str | None = Query(None, min_length=1, max_length=100, pattern=ID_PATTERN),
    status: Status | None = None,
    channel: Literal["inapp", "email", "webhook", "telegram"] | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: Cursor = None,
) -> DeliveryLog:
    """The delivery log: every delivery on every channel, newest first."""
    filters = {"member_id": member_id, "status": status, "channel": channel}
    docs = await ctx.use_cases.delivery_log(filters, limit, _after(cursor))
    return DeliveryLog(
        items=_readable(ctx, "deliveries", docs, Delivery.from_doc),
        next_cursor=_next_cursor(docs, limit),
    )
