"""Notifier HTTP routes: a member's in-app inbox."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from services.notifier.store import NotifierStore

router = APIRouter(prefix="/v1", tags=["notifier"])


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
    cursor: datetime | None = Query(None, description="next_cursor of the previous page"),
) -> Inbox:
    store: NotifierStore = request.app.state.store
    docs = await store.inbox(member_id, limit, before=cursor)
    items = [InboxItem(notification_id=d["_id"], **{k: d[k] for k in (
        "template", "category", "title", "body", "created_at", "cause_event_id")},
        read=bool(d.get("read"))) for d in docs]
    next_cursor = items[-1].created_at.isoformat() if len(items) == limit else None
    return Inbox(items=items, next_cursor=next_cursor)
