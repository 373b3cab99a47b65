"""What the organisation reads: an activity's report, the community's volunteering in the last
30 days, and the same as `sarafan_community_*` gauges.

Every figure is a sum of the counters kept in the shifts' ledgers (usecases/tally.py and the
rosters' counts): an activity's report adds up its shifts (at most 100), the community's adds
up the published shifts that started in the last 30 days, summed by the server over the
(status, starts_ms) index. Nothing counts sign-ups.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Gauge

from services.activities import domain, presence
from services.activities.store import ActivitiesStore
from shared.clock import epoch_ms
from shared.documents import Doc
from shared.metrics import Metrics
from shared.query import order_key

WINDOW = timedelta(days=30)
#: Every figure of GET /v1/activities/stats; each is also the gauge `sarafan_community_<name>`.
STATS: dict[str, str] = {
    "activities_30d": "Published activities whose first shift started in the last 30 days",
    "volunteer_hours_30d": "Volunteer hours attended on shifts that started in the last 30 days",
    "attended_30d": "Attendances (walk-ins included) on shifts of the last 30 days",
    "fill_rate": "Confirmed sign-ups over seats, shifts of the last 30 days",
    "no_show_rate": "No-shows over members with a seat whose attendance is known, last 30 days",
    "first_time_attendees_30d": "Members whose first attendance ever was in the last 30 days",
}


def shift_figures(ledger: Doc) -> Doc:
    return {"shift_id": ledger["_id"], **presence.figures(ledger)}


def activity_report(activity: Doc, ledgers: list[Doc]) -> Doc:
    """Per shift and in total (the shifts of a cancelled activity count nothing new)."""
    order = {sid: i for i, sid in enumerate(domain.shift_ids_in_order(activity))}
    ledgers = sorted(ledgers, key=lambda d: order.get(d["_id"], len(order)))
    totals = {k: sum(int(d.get(k) or 0) for d in ledgers) for k in presence.FIGURES}
    return {
        "activity_id": activity["_id"],
        "status": activity["status"],
        **presence.figures(totals),
        "shifts": [shift_figures(d) for d in ledgers],
    }


async def community(store: ActivitiesStore, now: datetime) -> dict[str, Any]:
    first = now - WINDOW
    end_ms = epoch_ms(now) + 1
    activities = await store.activities_between(
        "published", order_key(epoch_ms(first), ""), order_key(end_ms, "")
    )
    figures = presence.figures(await store.ledger_totals(epoch_ms(first), end_ms))
    return {
        "activities_30d": activities,
        "volunteer_hours_30d": figures["hours"],
        "attended_30d": figures["attended"],
        "fill_rate": figures["fill_rate"],
        "no_show_rate": figures["no_show_rate"],
        "first_time_attendees_30d": figures["first_time_attendees"],
    }


class CommunityGauges:
    """The figures of /v1/activities/stats as gauges (NaN while a ratio is undefined)."""

    def __init__(self, metrics: Metrics) -> None:
        self.service = metrics.service
        self.gauges: dict[str, Gauge] = {
            name: metrics.gauge(f"sarafan_community_{name}", doc) for name, doc in STATS.items()
        }

    def show(self, figures: dict[str, Any]) -> None:
        for name, gauge in self.gauges.items():
            value = figures.get(name)
            gauge.labels(self.service).set(math.nan if value is None else float(value))
