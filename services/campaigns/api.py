"""Campaigns HTTP routes: parse, apply the rules, map errors to 4xx."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from services.campaigns import domain
from services.campaigns.lifecycle import Conflict, Lifecycle, Missing
from services.campaigns.report import campaign_report
from services.campaigns.schemas import (
    CampaignIn,
    CampaignList,
    CampaignOut,
    Leaderboard,
    Report,
    StandingOut,
)
from services.campaigns.store import CampaignsStore, Doc
from shared.events import utcnow
from shared.http import ApiError, not_found
from shared.query import ORDER_KEY_RE, decode_cursor, decode_offset, encode_cursor

router = APIRouter(prefix="/v1", tags=["campaigns"])


def _store(request: Request) -> CampaignsStore:
    return request.app.state.store


def _lifecycle(request: Request) -> Lifecycle:
    return request.app.state.lifecycle


async def _campaign(request: Request, campaign_id: str) -> Doc:
    doc = await _store(request).campaign(campaign_id)
    if doc is None:
        raise not_found("campaign", campaign_id)
    return doc


@router.post("/campaigns", status_code=201, response_model=CampaignOut)
async def create_campaign(body: CampaignIn, request: Request) -> CampaignOut:
    """Create a campaign (status `scheduled`); it starts and ends by itself at its times."""
    now = utcnow()
    problems = domain.validate_definition(
        body.starts_at, body.ends_at, body.scoring, body.milestones, body.winners, now
    )
    if problems:
        raise ApiError(422, "invalid_campaign", "; ".join(problems), details=problems)
    doc = await _lifecycle(request).create(body.model_dump(mode="python"), now)
    return CampaignOut.from_doc(doc)


@router.get("/campaigns", response_model=CampaignList)
async def list_campaigns(
    request: Request,
    status: Annotated[domain.Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query()] = None,
) -> CampaignList:
    # The cursor is the opaque `order_key` of the last item; anything else is a 422
    # `invalid_cursor` (raised by decode_cursor, answered by the HTTP kernel). An empty
    # one is the first page, as it always was.
    after = decode_cursor(cursor, ORDER_KEY_RE) if cursor else None
    docs = await _store(request).list_campaigns(status, limit + 1, after)
    page = docs[:limit]
    next_cursor = encode_cursor(page[-1]["order_key"]) if len(docs) > limit else None
    return CampaignList(items=[CampaignOut.from_doc(d) for d in page], next_cursor=next_cursor)


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
async def get_campaign(campaign_id: str, request: Request) -> CampaignOut:
    return CampaignOut.from_doc(await _campaign(request, campaign_id))


async def _transition(request: Request, campaign_id: str, action: str) -> CampaignOut:
    lifecycle, now = _lifecycle(request), utcnow()
    try:
        if action == "start":
            after = await lifecycle.start(campaign_id, now, by_hand=True)
        elif action == "end":
            after = await lifecycle.end(campaign_id, now, by_hand=True)
        else:
            after = await lifecycle.cancel(campaign_id, now)
    except Missing as exc:
        raise not_found("campaign", campaign_id) from exc
    except Conflict as exc:
        raise ApiError(409, "invalid_status", str(exc), details={"status": exc.status}) from exc
    if after is None:
        # Lost a race with the scheduler, another replica or another client.
        current = await _campaign(request, campaign_id)
        raise ApiError(
            409,
            "invalid_status",
            f"campaign {campaign_id} is {current['status']}; cannot {action} it",
            details={"status": current["status"]},
        )
    return CampaignOut.from_doc(after)


@router.post("/campaigns/{campaign_id}/start", response_model=CampaignOut)
async def start_campaign(campaign_id: str, request: Request) -> CampaignOut:
    """Start a scheduled campaign now (emits campaign-started)."""
    return await _transition(request, campaign_id, "start")


@router.post("/campaigns/{campaign_id}/end", response_model=CampaignOut)
async def end_campaign(campaign_id: str, request: Request) -> CampaignOut:
    """End an active campaign now: winners by its rule (emits campaign-ended)."""
    return await _transition(request, campaign_id, "end")


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut)
async def cancel_campaign(campaign_id: str, request: Request) -> CampaignOut:
    """Cancel a scheduled or active campaign: no winners, no event."""
    return await _transition(request, campaign_id, "cancel")


@router.get("/campaigns/{campaign_id}/leaderboard", response_model=Leaderboard)
async def leaderboard(
    campaign_id: str,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="rank to continue after")] = None,
) -> Leaderboard:
    """Points descending; ties go to who reached the score first."""
    store = _store(request)
    campaign = await _campaign(request, campaign_id)
    # The cursor is the rank to continue after, as digits (strict: 422 `invalid_cursor`).
    offset = decode_offset(cursor)
    page, more = await store.leaderboard(campaign_id, offset, limit)
    members = await store.members_by_id([d["member_id"] for d in page], {"display_name": 1})
    items = [
        StandingOut(
            rank=offset + i + 1,
            member_id=d["member_id"],
            display_name=members.get(d["member_id"], {}).get("display_name"),
            points=float(d["points"]),
            reached_at=domain.from_ms(d["reached_ms"]),
            milestones=sorted(int(m) for m in d.get("milestones") or {}),
        )
        for i, d in enumerate(page)
    ]
    return Leaderboard(
        campaign_id=campaign_id,
        status=campaign["status"],
        items=items,
        next_cursor=str(offset + limit) if more else None,
    )


@router.get("/campaigns/{campaign_id}/report", response_model=Report)
async def report(campaign_id: str, request: Request) -> Report:
    """Was it worth it: participants, points, growth by referral, posts, hours, retention."""
    return await campaign_report(_store(request), await _campaign(request, campaign_id), utcnow())
