"""`GET /v1/campaigns/{id}/report`: was the campaign worth it, from this service's own data."""

from __future__ import annotations

from datetime import datetime

from services.campaigns.domain import from_ms, retention, to_ms
from services.campaigns.schemas import Report
from services.campaigns.store import CampaignsStore, Doc


async def campaign_report(store: CampaignsStore, campaign: Doc, now: datetime) -> Report:
    campaign_id = campaign["_id"]
    standings = await store.standings_of(campaign_id)
    totals = await store.activity_totals(campaign_id)
    referred = await store.referred_members(campaign_id)
    members = await store.members_by_id([r["referred_id"] for r in referred])
    now_ms = to_ms(now)
    outcomes = [
        retention(
            int(members.get(r["referred_id"], {}).get("joined_ms") or r["at_ms"]),
            members.get(r["referred_id"], {}).get("last_active_ms"),
            now_ms,
        )
        for r in referred
    ]

    def count(kind: str) -> int:
        return int(totals.get(kind, {}).get("count", 0))

    return Report(
        campaign_id=campaign_id,
        status=campaign["status"],
        window={
            "start": from_ms(campaign["window_start_ms"]),
            "end": from_ms(campaign["window_end_ms"]),
        },
        participants=len(standings),
        points_total=round(sum(float(s["points"]) for s in standings), 2),
        milestones_reached=sum(len(s.get("milestones") or {}) for s in standings),
        new_members_by_referral=len(referred),
        new_members_joined=count("member-joined"),
        posts=count("post-created"),
        comments=count("comment-added"),
        answers_accepted=count("answer-accepted"),
        hours=round(float(totals.get("hours-approved", {}).get("hours", 0) or 0), 2),
        referred_active_after_30d=outcomes.count("active"),
        referred_not_yet_30d=outcomes.count("too-early"),
        computed_at=now,
    )
