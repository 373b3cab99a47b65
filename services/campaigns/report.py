"""`GET /v1/campaigns/{id}/report`: was the campaign worth it, from this service's own data.

The figures are counted and summed by the server over the indexes of one campaign (its
standings, its activity facts), never by reading all campaigns or all members. Only the
retention of referred members reads documents: one per referral the campaign credited.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from services.campaigns.domain import retention
from services.campaigns.schemas import Report
from services.campaigns.store import CampaignsStore
from shared.clock import epoch_ms, from_ms
from shared.documents import Doc


async def campaign_report(store: CampaignsStore, campaign: Doc, now: datetime) -> Report:
    campaign_id = campaign["_id"]
    (participants, points, milestones), totals, referred = await asyncio.gather(
        store.standing_figures(campaign_id, [int(m) for m in campaign.get("milestones") or ()]),
        store.activity_totals(campaign_id),
        store.referred_members(campaign_id),
    )
    members = await store.members_by_id(
        [r["referred_id"] for r in referred],
        {"joined_at_ms": 1, "joined_ms": 1, "last_active_ms": 1},
    )
    now_ms = epoch_ms(now)

    def joined_ms(referral: Doc) -> int:
        # The projection's joined time; `joined_ms` is where earlier versions kept it.
        member = members.get(referral["referred_id"], {})
        return int(member.get("joined_at_ms") or member.get("joined_ms") or referral["at_ms"])

    outcomes = [
        retention(joined_ms(r), members.get(r["referred_id"], {}).get("last_active_ms"), now_ms)
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
        participants=participants,
        points_total=round(points, 2),
        milestones_reached=milestones,
        new_members_by_referral=len(referred),
        new_members_joined=count("member-joined"),
        posts=count("post-created"),
        comments=count("comment-added"),
        answers_accepted=count("answer-accepted"),
        hours=round(float(totals.get("hours-approved", {}).get("hours", 0) or 0), 2),
        attendances=count("attended"),
        referred_active_after_30d=outcomes.count("active"),
        referred_not_yet_30d=outcomes.count("too-early"),
        computed_at=now,
    )
