"""Notifier HTTP routes: a member's inbox and preferences, and the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from services.notifier.domain import Preferences
from services.notifier.store import NotifierStore
from shared.http import not_found
from shared.query import ORDER_KEY_RE, decode_cursor, encode_cursor
from shared.store import from_epoch_ms

router = APIRouter(prefix="/v1", tags=["notifier"])

Status = Literal["pending", "deferred", "sending", "delivered", "failed", "cancelled"]


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
    return encode_cursor(docs[-1]["order_key"])


def _when(ms: Any) -> datetime | None:
    return from_epoch_ms(ms) if isinstance(ms, int | float) else None


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


@router.get("/members/{member_id}/inbox", response_model=Inbox)
async def inbox(
    member_id: str,
    request: Request,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
) -> Inbox:
    """The member's in-app messages, newest first."""
    docs = await _store(request).inbox(member_id, limit, _cursor(cursor))
    items = [
        InboxItem(
            notification_id=d["_id"],
            read=bool(d.get("read")),
            **{
                k: d[k]
                for k in ("template", "category", "title", "body", "created_at", "cause_event_id")
            },
        )
        for d in docs
    ]
    return Inbox(items=items, next_cursor=_next_cursor(docs, limit))


class MemberPreferences(Preferences):
    member_id: str


async def _active_member(store: NotifierStore, member_id: str) -> dict[str, Any]:
    doc = await store.member(member_id)
    if doc is None or doc.get("status") != "active":
        raise not_found("member", member_id)
    return doc


@router.get("/members/{member_id}/preferences", response_model=MemberPreferences)
async def get_preferences(member_id: str, request: Request) -> MemberPreferences:
    """The member's notification preferences (the defaults until they set any)."""
    doc = await _active_member(_store(request), member_id)
    prefs = Preferences.model_validate(doc.get("preferences") or {})
    return MemberPreferences(member_id=member_id, **prefs.model_dump())


@router.put("/members/{member_id}/preferences", response_model=MemberPreferences)
async def put_preferences(member_id: str, body: Preferences, request: Request) -> MemberPreferences:
    """Replace the member's preferences; fields left out take their defaults."""
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


@router.get("/notifications", response_model=DeliveryLog)
async def notifications(
    request: Request,
    member_id: str | None = None,
    status: Status | None = None,
    channel: Literal["inapp", "email", "webhook", "telegram"] | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
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
        items=[Delivery.from_doc(d) for d in docs], next_cursor=_next_cursor(docs, limit)
    )
