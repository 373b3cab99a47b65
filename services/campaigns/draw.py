"""The `draw` winner rule: a weighted draw anyone can re-run from the published seed.

Procedure `sarafan-draw-v1` (documented in docs/campaigns.md):

1. Entrants are the members with points > 0 in the final standings, sorted by member id;
   points are written with exactly two decimals ("12.50").
2. The seed is SHA-256 (hex) of the canonical JSON
   `{"campaign_id":"<id>","standings":[["<member id>","<points>"],...]}`
   (keys sorted, no spaces, UTF-8), so it is fixed by the campaign and its final standings.
3. Each entrant's weight is their points in hundredths (an integer).
4. For draw i = 0, 1, ...: r = int(SHA-256("<seed>:<i>"), big-endian) mod (sum of weights of
   the entrants still in); walk the remaining entrants in member-id order adding weights and
   take the first whose running total exceeds r; that entrant wins rank i + 1 and leaves.
   Stop after `winners` draws or when nobody is left.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.campaigns.domain import Placing, Standing

PROCEDURE = "sarafan-draw-v1"


@dataclass(frozen=True)
class Entrant:
    member_id: str
    points: float

    @property
    def weight(self) -> int:
        return round(self.points * 100)

    def points_text(self) -> str:
        return f"{self.points:.2f}"


def entrants_from(standings: Iterable[Standing]) -> list[Entrant]:
    return sorted(
        (Entrant(s.member_id, s.points) for s in standings if s.points > 0),
        key=lambda e: e.member_id,
    )


def canonical(campaign_id: str, entrants: Sequence[Entrant]) -> bytes:
    ordered = sorted(entrants, key=lambda e: e.member_id)
    body = {
        "campaign_id": campaign_id,
        "standings": [[e.member_id, e.points_text()] for e in ordered],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seed_for(campaign_id: str, entrants: Sequence[Entrant]) -> str:
    return hashlib.sha256(canonical(campaign_id, entrants)).hexdigest()


def draw(entrants: Sequence[Entrant], seed: str, count: int) -> list[Placing]:
    """Winners in draw order; the same entrants and seed always give the same winners."""
    remaining = sorted((e for e in entrants if e.weight > 0), key=lambda e: e.member_id)
    winners: list[Placing] = []
    for i in range(count):
        total = sum(e.weight for e in remaining)
        if total <= 0:
            break
        r = int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest(), "big") % total
        running = 0
        for index, entrant in enumerate(remaining):
            running += entrant.weight
            if r < running:
                winners.append(Placing(entrant.member_id, i + 1, entrant.points))
                del remaining[index]
                break
    return winners


@dataclass(frozen=True)
class DrawCheck:
    ok: bool
    seed: str
    winners: list[Placing]
    problems: list[str]


def verify(
    campaign_id: str,
    entrants: Sequence[Entrant],
    published_seed: str,
    published_winners: Sequence[Placing],
    count: int,
) -> DrawCheck:
    """Re-run the draw from the published standings and compare with what was published."""
    problems = []
    seed = seed_for(campaign_id, entrants)
    if seed != published_seed:
        problems.append(f"seed differs: standings give {seed}, published {published_seed}")
    winners = draw(entrants, published_seed, count)
    expected = [(w.member_id, w.rank) for w in winners]
    got = [(w.member_id, w.rank) for w in published_winners]
    if expected != got:
        problems.append(f"winners differ: re-run gives {expected}, published {got}")
    return DrawCheck(not problems, seed, winners, problems)
