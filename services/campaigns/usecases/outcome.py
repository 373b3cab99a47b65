"""What a campaign publishes when it starts and ends: campaign-started (with a draw's
commitment), the result (participants, winners, the draw) and how it ended, campaign-ended.

The draw's procedure is `services.campaigns.draw`; this module says which one a campaign
ends with (v2 when it committed to a secret at its start, v1 for one that started before) and
what of it goes where: the campaign's `result.draw` keeps the entrants, campaign-ended
carries the secret, the seed and (up to `STANDINGS_IN_EVENT_BYTES`) the standings, so that
anyone holding the two events can re-run the draw.
"""

from __future__ import annotations

from typing import Any

from services.campaigns import draw
from services.campaigns.domain import Rules, Standing, ranked, top_winners
from services.campaigns.schemas import ending_out
from shared.clock import from_ms
from shared.documents import Doc
from shared.events import (
    Audience,
    CampaignEnded,
    CampaignStarted,
    CloudEvent,
    new_event,
)

#: campaign-ended carries the canonical standings up to this size (some thousands of
#: entrants); beyond it only their digest, and the entrants are in the campaign's result.
#: Far below the 512 KiB an event may be, with the winners beside them.
STANDINGS_IN_EVENT_BYTES = 256 * 1024
#: What `create` builds the start's event with, to know its size before the real one exists.
PLACEHOLDER_COMMITMENT = "0" * 64


def started_event(doc: Doc, window_start_ms: int, commitment: str | None = None) -> CloudEvent:
    """The campaign-started event of a campaign whose window starts at `window_start_ms`;
    a draw's `commitment` is the SHA-256 of the secret drawn for it."""
    return new_event(
        CampaignStarted(
            campaign_id=doc["_id"],
            name=doc["name"],
            kind=doc["kind"],
            audience=Audience.model_validate(doc["audience"]),
            starts_at=from_ms(window_start_ms),
            ends_at=from_ms(doc["window_end_ms"]),
            announcement=doc["announcement"],
            draw_commitment=commitment,
        ),
    )


def final_result(
    rules: Rules, standings: list[Standing], secret: bytes | None = None
) -> dict[str, Any]:
    """Participants and winners by the campaign's rule. A draw publishes its procedure, seed
    and entrants: `sarafan-draw-v2` with the `secret` committed to at the start (revealed
    here), `sarafan-draw-v1` for a campaign that started without one."""
    participants = ranked(standings)
    result: dict[str, Any] = {
        "winner_rule": rules.winner_rule,
        "participants": len(participants),
        "points_total": round(sum(s.points for s in participants), 2),
    }
    if rules.winner_rule == "draw":
        entrants = draw.entrants_from(participants)
        result["draw"] = _draw(rules.campaign_id, entrants, secret)
        winners = draw.draw(entrants, result["draw"]["seed"], rules.winners)
    else:
        winners = top_winners(participants, rules.winners)
    result["winners"] = [
        {"member_id": w.member_id, "rank": w.rank, "points": w.points} for w in winners
    ]
    return result


def _draw(campaign_id: str, entrants: list[draw.Entrant], secret: bytes | None) -> Doc:
    listed = [{"member_id": e.member_id, "points": e.points} for e in entrants]
    if secret is None:
        seed = draw.seed_for(campaign_id, entrants)
        return {"procedure": draw.PROCEDURE_V1, "seed": seed, "entrants": listed}
    return {
        "procedure": draw.PROCEDURE_V2,
        "seed": draw.seed_v2(secret, campaign_id, entrants),
        "secret": secret.hex(),
        "commitment": draw.commitment_of(secret),
        "standings_sha256": draw.standings_sha256(campaign_id, entrants),
        "entrants": listed,
    }


def ending(doc: Doc, now_ms: int, *, by_hand: bool, key_id: str | None) -> Doc:
    """How the campaign ends now, as stored with it: by hand (by which key) or by the
    scheduler, whether before its end time, and the time its standings are frozen at (the
    window's end: `ends_at`, or now when ended by hand before it)."""
    window_end = int(doc["window_end_ms"])
    early = by_hand and now_ms < window_end
    return {
        "by_hand": by_hand,
        "key_id": key_id if by_hand else None,
        "early": early,
        "frozen_ms": now_ms if early else window_end,
    }


def ended_event(rules: Rules, result: dict[str, Any], end: Doc, ended_ms: int) -> CloudEvent:
    """campaign-ended: the winners, how it ended, and for a draw what re-runs it."""
    extra: dict[str, Any] = {"winner_rule": rules.winner_rule}
    if "draw" in result:
        extra["draw"] = _published_draw(rules, result["draw"])
    return new_event(
        CampaignEnded(
            campaign_id=rules.campaign_id,
            participants=result["participants"],
            winners=result["winners"],
            ended_at=from_ms(ended_ms),
            ending=ending_out(end),
            **extra,
        ),
    )


def _published_draw(rules: Rules, kept: Doc) -> Doc:
    """The draw as campaign-ended carries it: the entrants as a count and, for v2, the
    secret, the commitment and the canonical standings (when they fit) with their digest."""
    published = {
        "procedure": kept["procedure"],
        "seed": kept["seed"],
        "entrants": len(kept["entrants"]),
        "draws": rules.winners,
    }
    if kept["procedure"] == draw.PROCEDURE_V1:
        return published
    entrants = [draw.Entrant(e["member_id"], e["points"]) for e in kept["entrants"]]
    published |= {k: kept[k] for k in ("secret", "commitment", "standings_sha256")}
    if len(draw.canonical(rules.campaign_id, entrants)) <= STANDINGS_IN_EVENT_BYTES:
        published["standings"] = draw.standings_rows(entrants)
    return published
