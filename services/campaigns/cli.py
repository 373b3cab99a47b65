"""`sarafan campaigns verify-draw ID`: re-run a campaign's published draw and compare."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import httpx

from services.campaigns import draw
from services.campaigns.domain import Placing

DEFAULT_URL = "http://127.0.0.1:8003"


def check_campaign(campaign: Mapping[str, Any]) -> draw.DrawCheck:
    """Verify a campaign resource (`GET /v1/campaigns/{id}`) that ended with a draw."""
    result = campaign.get("result") or {}
    published = result.get("draw")
    if campaign.get("status") != "ended" or not published:
        raise ValueError(
            f"campaign {campaign.get('campaign_id')} has no published draw "
            f"(status {campaign.get('status')}, winner_rule {campaign.get('winner_rule')})"
        )
    if published.get("procedure") != draw.PROCEDURE:
        raise ValueError(f"unknown draw procedure {published.get('procedure')!r}")
    entrants = [draw.Entrant(e["member_id"], float(e["points"])) for e in published["entrants"]]
    winners = [
        Placing(w["member_id"], int(w["rank"]), float(w["points"])) for w in result["winners"]
    ]
    return draw.verify(
        campaign["campaign_id"], entrants, published["seed"], winners, int(campaign["winners"])
    )


def _token(environ: Mapping[str, str]) -> str:
    # Same places as `sarafan up`: the environment, else the token it stored in SARAFAN_HOME.
    if environ.get("SARAFAN_API_TOKEN"):
        return environ["SARAFAN_API_TOKEN"]
    stored = Path(environ.get("SARAFAN_HOME") or ".sarafan") / "api-token"
    return stored.read_text().strip() if stored.exists() else ""


def verify_draw_main(
    argv: list[str],
    environ: Mapping[str, str] = os.environ,
    out: TextIO = sys.stdout,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """0: the draw re-runs to the published winners; 1: it does not; 2: cannot check."""
    parser = argparse.ArgumentParser(
        prog="sarafan campaigns verify-draw",
        description="Re-run a campaign's draw from its published standings and seed.",
    )
    parser.add_argument("campaign_id")
    parser.add_argument(
        "--url",
        default=environ.get("SARAFAN_CAMPAIGNS_URL", DEFAULT_URL),
        help="campaigns service base URL (SARAFAN_CAMPAIGNS_URL)",
    )
    args = parser.parse_args(argv)
    headers = {"Authorization": f"Bearer {_token(environ)}"}
    try:
        with httpx.Client(
            base_url=args.url, headers=headers, timeout=10, transport=transport
        ) as client:
            response = client.get(f"/v1/campaigns/{args.campaign_id}")
        if response.status_code != 200:
            print(
                f"cannot fetch campaign {args.campaign_id}: HTTP {response.status_code} "
                f"{response.text}",
                file=out,
            )
            return 2
        check = check_campaign(response.json())
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        print(f"cannot verify: {exc}", file=out)
        return 2
    print(f"campaign {args.campaign_id}: procedure {draw.PROCEDURE}", file=out)
    print(f"seed from the published standings: {check.seed}", file=out)
    print(
        "winners on re-run: "
        + ", ".join(f"{w.rank}. {w.member_id} ({w.points:g})" for w in check.winners),
        file=out,
    )
    if check.ok:
        print("MATCH: the published seed and winners are what the draw gives", file=out)
        return 0
    for problem in check.problems:
        print(f"MISMATCH: {problem}", file=out)
    return 1


if __name__ == "__main__":
    raise SystemExit(verify_draw_main(sys.argv[1:]))
