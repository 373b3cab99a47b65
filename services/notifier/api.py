"""Notifier HTTP routes: a member's inbox and preferences, and the delivery log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ValidationError

from services.notifier.domain import Preferences
from services.notifier.store import NotifierStore
from services.notifier.texts import delivery_text, mentioned
from shared.http import not_found, require
from shared.query import CURSOR_MAX, ORDER_KEY_RE, decode_cursor, encode_cursor
from shared.store import from_epoch_ms

router = APIRouter(prefix="/v1", tags=["notifier"])
#: The scopes of these routes (shared/keys.py says what each allows).
READ, WRITE = "notifier:read", "notifier:write"
log = logging.getLogger("sarafan.notifier.api")
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


def _store(request: Request) -> NotifierStore:
    return request.app.state.store


def _cursor(value: str | None) -> str | None:
    """The order key inside a `next_cursor`; anything else is 422 `invalid_cursor` (the
    kernel's handler of InvalidCursor)."""
    if not value:
        return None
    return decode_cursor(value, ORDER_KEY_RE)


def _next_cursor(docs: list[dict[str, Any]], limit: int) -> str | None:
    """Opaque: the order key (created time, then id) of the last item of a full page."""
    if len(docs) < limit:
        return None
    return encode_cursor(str(docs[-1]["order_key"]))


def _when(ms: Any) -> datetime | None:
    return from_epoch_ms(ms) if isinstance(ms, int | float) else None


def _readable(
    request: Request, collection: str, docs: Iterable[dict[str, Any]], convert: Callable[..., T]
) -> list[T]:
    """The documents of a page a client can be shown. One that cannot be read (written by
    hand, by an old version, a text that no longer renders) is left out, logged by id and
    counted (`sarafan_documents_skipped_total`), so it never takes the whole list down."""
    items: list[T] = []
    for doc in docs:
        try:
            items.append(convert(doc))
        except Exception as exc:
            request.app.state.skipped_documents.labels("notifier", collection).inc()
            # The id and what is wrong, never the values: they may be personal data.
            log.warning(
                "list skipped unreadable %s document %s (%s)",
                collection,
                str(doc.get("_id"))[:100],
                _what_is_wrong(exc),
            )
    return items


def _what_is_wrong(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['type']}" for e in exc.errors()[:10]
        )
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    return type(exc).__name__


class InboxItem(BaseModel):
    notification_id: str
    template: str
    category: str
    title: str
    body: str
    created_at: datetime
    read: bool = False
    cause_event_id: str


class Inbox(BaseModel):
    items: list[InboxItem]
    next_cursor: str | None = None


@router.get("/members/{member_id}/inbox", response_model=Inbox, dependencies=[require(READ)])
async def inbox(
    member_id: MemberId,
    request: Request,
    limit: int = Query(50, ge=1, le=200),
    cursor: Cursor = None,
) -> Inbox:
    """The member's in-app messages, newest first.

    Texts are rendered now, with the names the projection has now: a member named in a
    message (a commenter, an asker) and erased since is no longer named (docs/notifier.md).
    """
    store = _store(request)
    docs = await store.inbox(member_id, limit, _cursor(cursor))
    # The member and everyone the page's texts name: one read by primary key, O(page).
    people = await store.names({member_id, *mentioned(docs)})
    name = people.get(member_id, "")

    def item(d: dict[str, Any]) -> InboxItem:
        title, body = delivery_text(d, name, people)
        return InboxItem(
            notification_id=d["_id"],
            read=bool(d.get("read")),
            title=title,
            body=body,
            **{k: d[k] for k in ("template", "category", "created_at", "cause_event_id")},
        )

    items = _readable(request, "deliveries", docs, item)
    return Inbox(items=items, next_cursor=_next_cursor(docs, limit))


class MemberPreferences(Preferences):
    member_id: str


async def _active_member(store: NotifierStore, member_id: str) -> dict[str, Any]:
    doc = await store.member(member_id)
    if doc is None or doc.get("status") != "active":
        raise not_found("member", member_id)
    return doc


@router.get(
    "/members/{member_id}/preferences",
    response_model=MemberPreferences,
    dependencies=[require(READ)],
)
async def get_preferences(member_id: MemberId, request: Request) -> MemberPreferences:
    """The member's notification preferences (the defaults until they set any)."""
    doc = await _active_member(_store(request), member_id)
    prefs = Preferences.stored(doc.get("preferences"))
    return MemberPreferences(member_id=member_id, **prefs.model_dump())


@router.put(
    "/members/{member_id}/preferences",
    response_model=MemberPreferences,
    dependencies=[require(WRITE)],
)
async def put_preferences(
    member_id: MemberId, body: Preferences, request: Request
) -> MemberPreferences:
    """Replace the member's preferences; fields left out take their defaults.

    Bounded and strict: each channel once (three at most), known categories with JSON
    booleans, whole-number hours 0–23, quiet hours as local times ("22:00"), a rate limit of
    1–1000 an hour or null; anything else (an unknown field, `"18"` or `true` for an hour) is
    a 422 and nothing is stored.
    """
    store = _store(request)
    await _active_member(store, member_id)
    # One whole subdocument: booleans inside stay booleans on nx-27017 too.
    if not await store.set_preferences(member_id, body.model_dump(mode="json")):
        raise not_found("member", member_id)
    return MemberPreferences(member_id=member_id, **body.model_dump())


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
    request: Request,
    member_id: str | None = Query(None, min_length=1, max_length=100, pattern=ID_PATTERN),
    status: Status | None = None,
    channel: Literal["inapp", "email", "webhook", "telegram"] | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: Cursor = None,
) -> DeliveryLog:
    """The delivery log: every delivery on every channel, newest first."""
    query: dict[str, Any] = {}
    if member_id:
        query["member_id"] = member_id
    if status:
        query["status"] = status
    if channel:
        query["channel"] = channel
    docs = await _store(request).log(query, limit, _cursor(cursor))
    return DeliveryLog(
        items=_readable(request, "deliveries", docs, Delivery.from_doc),
        next_cursor=_next_cursor(docs, limit),
    )
