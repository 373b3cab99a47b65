"""`sarafan campaigns verify-draw ID`: check a campaign's draw: the commitment made at its
start, the seed, the winners.

What is checked comes from the campaign resource (`GET /v1/campaigns/{id}`), from the two
events (`--started`, `--ended`: each file one CloudEvent as published), or both: the commitment
of a saved campaign-started is then compared with what the service shows now. With both events
and standings in campaign-ended, nothing is asked of the service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import httpx

from services.campaigns import draw
from services.campaigns.domain import Placing

DEFAULT_URL = "http://127.0.0.1:8003"

Json = Mapping[str, Any]
MATCHED = {
    draw.PROCEDURE_V2: "the secret is the one committed to at the start, and the seed and the "
    "winners are what it and the standings give",
    draw.PROCEDURE_V1: "the seed and the winners are what the standings give (a draw made "
    "before commitments: anyone could compute it before the end)",
}


def _winners(listed: list[Json]) -> list[Placing]:
    return [Placing(w["member_id"], int(w["rank"]), float(w["points"])) for w in listed]


def _event_data(event: Json, event_type: str) -> Json:
    if event.get("type") != event_type or not isinstance(event.get("data"), Mapping):
        raise ValueError(f"not a {event_type} CloudEvent (type {event.get('type')!r})")
    return event["data"]


def from_campaign(campaign: Json) -> draw.Published:
    """What a campaign resource (`GET /v1/campaigns/{id}`) that ended with a draw publishes."""
    result = campaign.get("result") or {}
    published = result.get("draw")
    if campaign.get("status") != "ended" or not published:
        raise ValueError(
            f"campaign {campaign.get('campaign_id')} has no published draw "
            f"(status {campaign.get('status')}, winner_rule {campaign.get('winner_rule')})"
        )
    return draw.Published(
        campaign_id=campaign["campaign_id"],
        procedure=published.get("procedure"),
        entrants=[draw.Entrant(e["member_id"], float(e["points"])) for e in published["entrants"]],
        seed=published["seed"],
        winners=_winners(result["winners"]),
        draws=int(campaign["winners"]),
        secret=published.get("secret"),
        commitment=campaign.get("draw_commitment"),
        standings_sha256=published.get("standings_sha256"),
    )


def from_ended_event(ended: Json, campaign: Json | None = None) -> draw.Published:
    """What campaign-ended publishes; the entrants (and, for an event made before it said,
    the number of draws) from `campaign` when the event does not carry them."""
    data = _event_data(ended, "campaign-ended")
    published = data.get("draw")
    if not published:
        raise ValueError(f"campaign-ended of {data.get('campaign_id')} carries no draw")
    rows = published.get("standings")
    if rows is not None:
        entrants = [draw.Entrant(member_id, float(points)) for member_id, points in rows]
    elif campaign is not None:
        entrants = list(from_campaign(campaign).entrants)
    else:
        raise ValueError("campaign-ended carries no standings: the campaign resource has them")
    draws = published.get("draws")
    if draws is None:
        if campaign is None:
            raise ValueError("campaign-ended does not say how many draws: the campaign does")
        draws = campaign["winners"]
    return draw.Published(
        campaign_id=data["campaign_id"],
        procedure=published.get("procedure"),
        entrants=entrants,
        seed=published["seed"],
        winners=_winners(data.get("winners") or []),
        draws=int(draws),
        secret=published.get("secret"),
        standings_sha256=published.get("standings_sha256"),
    )


def _commitments(
    campaign_id: str, campaign: Json | None, started: Json | None, ended: Json | None
) -> list[tuple[str, str]]:
    """Where a commitment was found, and what it is: campaign-started first (published at the
    start), then the campaign resource, then campaign-ended (which repeats it)."""
    found = []
    if started is not None:
        data = _event_data(started, "campaign-started")
        if data.get("campaign_id") != campaign_id:
            raise ValueError(f"campaign-started is of campaign {data.get('campaign_id')!r}")
        found.append(("campaign-started", data.get("draw_commitment")))
    if campaign is not None:
        found.append(("the campaign resource", campaign.get("draw_commitment")))
    if ended is not None:
        found.append(("campaign-ended", (ended["data"].get("draw") or {}).get("commitment")))
    return [(where, value) for where, value in found if value is not None]


def check(
    campaign: Json | None = None,
    started: Json | None = None,
    ended: Json | None = None,
    campaign_id: str | None = None,
) -> draw.DrawCheck:
    """Verify a draw from the campaign resource, its two events, or both (see the module);
    all of the campaign `campaign_id` when given."""
    if ended is not None:
        published = from_ended_event(ended, campaign)
    elif campaign is not None:
        published = from_campaign(campaign)
    else:
        raise ValueError("nothing to check: give the campaign or its campaign-ended")
    for given in (campaign_id, (campaign or {}).get("campaign_id")):
        if given is not None and given != published.campaign_id:
            raise ValueError(f"the draw given is of campaign {published.campaign_id!r}")
    commitments = _commitments(published.campaign_id, campaign, started, ended)
    problems = []
    if len({value for _, value in commitments}) > 1:
        problems.append(
            "commitments differ: "
            + ", ".join(f"{where} has {value}" for where, value in commitments)
        )
    if commitments and published.procedure == draw.PROCEDURE_V1:
        problems.append(
            f"the campaign committed to a secret at its start, yet its draw says "
            f"{draw.PROCEDURE_V1} (which uses none)"
        )
    commitment = commitments[0][1] if commitments else None
    result = draw.verify(replace(published, commitment=commitment))
    if not problems:
        return result
    return replace(result, ok=False, problems=problems + result.problems)


def check_campaign(campaign: Json) -> draw.DrawCheck:
    """Verify a campaign resource (`GET /v1/campaigns/{id}`) that ended with a draw."""
    return check(campaign=campaign)


def _token(environ: Mapping[str, str]) -> str:
    # Same places as `sarafan up`: the environment, else the token it stored in SARAFAN_HOME.
    if environ.get("SARAFAN_API_TOKEN"):
        return environ["SARAFAN_API_TOKEN"]
    stored = Path(environ.get("SARAFAN_HOME") or ".sarafan") / "api-token"
    return stored.read_text().strip() if stored.exists() else ""


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarafan campaigns verify-draw",
        description="Check a campaign's draw: the commitment made at its start, the seed from "
        "the revealed secret and the standings, and the winners on a re-run.",
    )
    parser.add_argument("campaign_id")
    parser.add_argument(
        "--url",
        default=environ.get("SARAFAN_CAMPAIGNS_URL", DEFAULT_URL),
        help="campaigns service base URL (SARAFAN_CAMPAIGNS_URL)",
    )
    parser.add_argument("--started", type=Path, help="a file holding the campaign-started event")
    parser.add_argument("--ended", type=Path, help="a file holding the campaign-ended event")
    return parser


def _needs_service(started: Json | None, ended: Json | None) -> bool:
    if started is None or ended is None:
        return True
    published = (ended.get("data") or {}).get("draw") or {}
    return published.get("standings") is None or published.get("draws") is None


def _fetch(args: argparse.Namespace, environ: Mapping[str, str], transport: Any) -> Json:
    headers = {"Authorization": f"Bearer {_token(environ)}"}
    with httpx.Client(base_url=args.url, headers=headers, timeout=10, transport=transport) as c:
        response = c.get(f"/v1/campaigns/{args.campaign_id}")
    if response.status_code != 200:
        raise LookupError(
            f"cannot fetch campaign {args.campaign_id}: HTTP {response.status_code} {response.text}"
        )
    return response.json()


def _report(campaign_id: str, result: draw.DrawCheck, out: TextIO) -> int:
    print(f"campaign {campaign_id}: procedure {result.procedure}", file=out)
    for line in result.checked:
        print(f"ok: {line}", file=out)
    print(f"seed on re-run: {result.seed}", file=out)
    print(
        "winners on re-run: "
        + ", ".join(f"{w.rank}. {w.member_id} ({w.points:g})" for w in result.winners),
        file=out,
    )
    if result.ok:
        print(f"MATCH: {MATCHED.get(result.procedure, MATCHED[draw.PROCEDURE])}", file=out)
        return 0
    for problem in result.problems:
        print(f"MISMATCH: {problem}", file=out)
    return 1


def verify_draw_main(
    argv: list[str],
    environ: Mapping[str, str] = os.environ,
    out: TextIO = sys.stdout,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """0: the draw checks out; 1: something does not match (each named); 2: cannot check."""
    args = _parser(environ).parse_args(argv)
    try:
        started = json.loads(args.started.read_text()) if args.started else None
        ended = json.loads(args.ended.read_text()) if args.ended else None
        campaign = _fetch(args, environ, transport) if _needs_service(started, ended) else None
        result = check(campaign, started, ended, args.campaign_id)
    except (OSError, LookupError, ValueError, TypeError, httpx.HTTPError) as exc:
        print(f"cannot verify: {exc}", file=out)
        return 2
    return _report(args.campaign_id, result, out)


if __name__ == "__main__":
    raise SystemExit(verify_draw_main(sys.argv[1:]))
