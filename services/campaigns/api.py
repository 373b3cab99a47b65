"""Campaigns HTTP routes: parse, call the use case (`usecases.Lifecycle`) or read, map errors
to 4xx."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Query, Request

from services.campaigns import domain
from services.campaigns.context import Campaigns, CampaignsDep
from services.campaigns.report import campaign_report
from services.campaigns.schemas import (
    CampaignIn,
    CampaignList,
    CampaignOut,
    Leaderboard,
    Report,
    StandingOut,
)
from services.campaigns.usecases import Conflict, InvalidCampaign, Missing
from shared.clock import from_ms
from shared.documents import Doc
from shared.http import ApiError, error_responses, new_id, not_found, require
from shared.query import ORDER_KEY_RE, decode_cursor, decode_offset, encode_cursor

router = APIRouter(prefix="/v1", tags=["campaigns"])
#: The scopes of these routes (shared/keys.py says what each allows).
READ, MANAGE = "campaigns:read", "campaigns:manage"

T = TypeVar("T")
#: A campaign id as this service hands them out (`c_` and 32 hex digits), with room to spare;
#: longer is a 422, never a lookup or an echo of the whole path in a message.
CampaignId = Annotated[str, Path(min_length=1, max_length=100)]


def _readable(
    ctx: Campaigns,
    request: Request,
    collection: str,
    docs: Iterable[Doc],
    convert: Callable[[Doc], T],
) -> list[T]:
    """What can be shown of a page's documents. One that cannot be read (written by hand, by
    an old version) is left out, logged by id and counted, so it never fails the whole list."""
    items: list[T] = []
    for doc in docs:
        try:
            items.append(convert(doc))
        except Exception as exc:
            ctx.skipped.skip(collection, doc.get("_id"), exc, f"GET {request.url.path}")
    return items


async def _campaign(ctx: Campaigns, campaign_id: str) -> Doc:
    doc = await ctx.store.campaign(campaign_id)
    if doc is None:
        raise not_found("campaign", campaign_id)
    return doc


@router.post(
    "/campaigns", status_code=201, response_model=CampaignOut, dependencies=[require(MANAGE)]
)
async def create_campaign(body: CampaignIn, request: Request, ctx: CampaignsDep) -> CampaignOut:
    """Create a campaign (status `scheduled`); it starts and ends by itself at its times."""
    # Keyed by the Idempotency-Key when there is one: a retry whose first answer was lost
    # finds the campaign the first attempt stored.
    campaign_id = "c_" + new_id(request).replace("-", "")
    try:
        doc = await ctx.lifecycle.create(body, campaign_id=campaign_id)
    except InvalidCampaign as exc:
        raise ApiError(422, "invalid_campaign", str(exc), details=exc.problems) from exc
    return CampaignOut.from_doc(doc)


@router.get("/campaigns", response_model=CampaignList, dependencies=[require(READ)])
async def list_campaigns(
    request: Request,
    ctx: CampaignsDep,
    status: Annotated[domain.Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query()] = None,
) -> CampaignList:
    # The cursor is the opaque `order_key` of the last item; anything else is a 422
    # `invalid_cursor` (raised by decode_cursor, answered by the HTTP kernel). An empty
    # one is the first page, as it always was.
    after = decode_cursor(cursor, ORDER_KEY_RE) if cursor else None
    docs = await ctx.store.list_campaigns(status, limit + 1, after)
    page = docs[:limit]
    next_cursor = encode_cursor(page[-1]["order_key"]) if len(docs) > limit else None
    items = _readable(ctx, request, "campaigns", page, CampaignOut.from_doc)
    return CampaignList(items=items, next_cursor=next_cursor)


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut, dependencies=[require(READ)])
async def get_campaign(campaign_id: CampaignId, ctx: CampaignsDep) -> CampaignOut:
    return CampaignOut.from_doc(await _campaign(ctx, campaign_id))


async def _transition(
    ctx: Campaigns, request: Request, campaign_id: str, action: str
) -> CampaignOut:
    lifecycle = ctx.lifecycle
    try:
        if action == "start":
            after = await lifecycle.start(campaign_id, by_hand=True)
        elif action == "end":
            # Who ends it is recorded with the end (and early ends are logged).
            key_id = getattr(getattr(request.state, "principal", None), "key_id", None)
            after = await lifecycle.end(campaign_id, by_hand=True, key_id=key_id)
        else:
            after = await lifecycle.cancel(campaign_id)
    except Missing as exc:
        raise not_found("campaign", campaign_id) from exc
    except Conflict as exc:
        raise ApiError(409, "invalid_status", str(exc), details={"status": exc.status}) from exc
    if after is None:
        # Lost a race with the scheduler, another replica or another client.
        current = await _campaign(ctx, campaign_id)
        raise ApiError(
            409,
            "invalid_status",
            f"campaign {campaign_id} is {current['status']}; cannot {action} it",
            details={"status": current["status"]},
        )
    return CampaignOut.from_doc(after)


#: What a start, an end or a cancel answers when the campaign's status does not allow it.
NOT_NOW = error_responses({409: {"invalid_status": "campaign c_01 is ended; cannot start it"}})


@router.post(
    "/campaigns/{campaign_id}/start",
    response_model=CampaignOut,
    dependencies=[require(MANAGE)],
    responses=NOT_NOW,
)
async def start_campaign(
    campaign_id: CampaignId, request: Request, ctx: CampaignsDep
) -> CampaignOut:
    """Start a scheduled campaign now (emits campaign-started)."""
    return await _transition(ctx, request, campaign_id, "start")


@router.post(
    "/campaigns/{campaign_id}/end",
    response_model=CampaignOut,
    dependencies=[require(MANAGE)],
    responses=NOT_NOW,
)
async def end_campaign(campaign_id: CampaignId, request: Request, ctx: CampaignsDep) -> CampaignOut:
    """End an active campaign now: winners by its rule (emits campaign-ended). Before its
    ends_at the standings freeze now, and the end is recorded as early with the key."""
    return await _transition(ctx, request, campaign_id, "end")


@router.post(
    "/campaigns/{campaign_id}/cancel",
    response_model=CampaignOut,
    dependencies=[require(MANAGE)],
    responses=NOT_NOW,
)
async def cancel_campaign(
    campaign_id: CampaignId, request: Request, ctx: CampaignsDep
) -> CampaignOut:
    """Cancel a scheduled or active campaign: no winners, no event."""
    return await _transition(ctx, request, campaign_id, "cancel")


@router.get(
    "/campaigns/{campaign_id}/leaderboard", response_model=Leaderboard, dependencies=[require(READ)]
)
async def leaderboard(
    campaign_id: CampaignId,
    request: Request,
    ctx: CampaignsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(description="rank to continue after")] = None,
) -> Leaderboard:
    """Points descending; ties go to who reached the score first."""
    store = ctx.store
    campaign = await _campaign(ctx, campaign_id)
    # The cursor is the rank to continue after, as digits (strict: 422 `invalid_cursor`).
    offset = decode_offset(cursor)
    page, more = await store.leaderboard(campaign_id, offset, limit)
    members = await store.members_by_id(
        [d["member_id"] for d in page if isinstance(d.get("member_id"), str)], {"display_name": 1}
    )

    def standing(d: Doc) -> StandingOut:
        return StandingOut(
            rank=d["rank"],
            member_id=d["member_id"],
            display_name=members.get(d["member_id"], {}).get("display_name"),
            points=float(d["points"]),
            reached_at=from_ms(d["reached_ms"]),
            milestones=sorted(int(m) for m in d.get("milestones") or {}),
        )

    # A rank is the place in the order, so a standing left out leaves its rank unused.
    ranked = [{**d, "rank": offset + i + 1} for i, d in enumerate(page)]
    items = _readable(ctx, request, "standings", ranked, standing)
    return Leaderboard(
        campaign_id=campaign_id,
        status=campaign["status"],
        items=items,
        next_cursor=str(offset + limit) if more else None,
    )


@router.get("/campaigns/{campaign_id}/report", response_model=Report, dependencies=[require(READ)])
async def report(campaign_id: CampaignId, ctx: CampaignsDep) -> Report:
    """Was it worth it: participants, points, growth by referral, posts, hours, retention."""
    return await campaign_report(ctx.store, await _campaign(ctx, campaign_id), ctx.clock())
