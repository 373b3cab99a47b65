"""The `draw` winner rule: a weighted draw nobody can predict or steer before the end, and
anyone can re-run and check after it.

Procedure `sarafan-draw-v2` (docs/campaigns.md, "The draw", says the same with an example):

0. Commitment. When the campaign starts, the service draws a secret of 32 random bytes,
   keeps it, and publishes in campaign-started `draw_commitment` = SHA-256(secret) as 64
   lowercase hex digits. No route, log line or event shows the secret before the end.
1. Entrants: the members with points > 0 in the standings frozen at the end, sorted by member
   id (by Unicode code point); points are written with exactly two decimals ("12.50").
2. Canonical standings: the UTF-8 bytes of the JSON
   `{"campaign_id":"<id>","standings":[["<member id>","<points>"],...]}`, keys sorted, no
   spaces, non-ASCII characters as themselves (Python: `json.dumps(body, sort_keys=True,
   separators=(",", ":"), ensure_ascii=False).encode()`).
3. Seed: SHA-256 over the 32 secret bytes followed by the canonical standings bytes, as 64
   lowercase hex digits: `sha256(secret + canonical).hexdigest()`. campaign-ended reveals
   the secret (hex) with the seed.
4. Each entrant's weight is their points in hundredths (an integer).
5. For draw i = 0, 1, ...: r = int(SHA-256 of the ASCII text "<seed>:<i>", big-endian) mod
   (sum of weights of the entrants still in); walk the remaining entrants in member-id order
   adding weights and take the first whose running total exceeds r; that entrant wins rank
   i + 1 and leaves. Stop after `winners` draws or when nobody is left.

Whoever changes the standings (one more post) or the moment of the end does not know the
secret, so cannot tell which change gives which winner; the service cannot choose another
secret once the commitment is out.

Procedure `sarafan-draw-v1`, for campaigns that started before v2 (no commitment): the same
with seed = SHA-256(canonical standings). It is fixed by the standings the leaderboard shows,
so anyone could compute it before the end; it is kept to verify the draws made with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.campaigns.domain import Placing, Standing

PROCEDURE_V1 = "sarafan-draw-v1"
PROCEDURE_V2 = "sarafan-draw-v2"
#: The procedure of a campaign that starts now.
PROCEDURE = PROCEDURE_V2
PROCEDURES = (PROCEDURE_V1, PROCEDURE_V2)
SECRET_BYTES = 32
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


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


def standings_rows(entrants: Sequence[Entrant]) -> list[list[str]]:
    """The standings as the canonical form writes them: [member id, points text], by id."""
    ordered = sorted(entrants, key=lambda e: e.member_id)
    return [[e.member_id, e.points_text()] for e in ordered]


def canonical(campaign_id: str, entrants: Sequence[Entrant]) -> bytes:
    body = {"campaign_id": campaign_id, "standings": standings_rows(entrants)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def standings_sha256(campaign_id: str, entrants: Sequence[Entrant]) -> str:
    """The digest of the canonical standings (campaign-ended carries it)."""
    return hashlib.sha256(canonical(campaign_id, entrants)).hexdigest()


def seed_for(campaign_id: str, entrants: Sequence[Entrant]) -> str:
    """The seed of `sarafan-draw-v1`: the standings alone."""
    return standings_sha256(campaign_id, entrants)


def commitment_of(secret: bytes) -> str:
    """What campaign-started publishes: SHA-256 of the secret, hex."""
    return hashlib.sha256(secret).hexdigest()


def seed_v2(secret: bytes, campaign_id: str, entrants: Sequence[Entrant]) -> str:
    """The seed of `sarafan-draw-v2`: the secret's bytes, then the canonical standings."""
    return hashlib.sha256(secret + canonical(campaign_id, entrants)).hexdigest()


def secret_from_hex(text: object) -> bytes:
    """The secret's bytes from its published form (64 lowercase hex digits), or ValueError."""
    if not isinstance(text, str) or not _HEX_DIGEST.fullmatch(text):
        raise ValueError(f"the secret is not {SECRET_BYTES * 2} lowercase hex digits")
    return bytes.fromhex(text)


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
class Published:
    """What a campaign published about its draw (from its two events or its resource)."""

    campaign_id: str
    procedure: str
    entrants: Sequence[Entrant]
    seed: str
    winners: Sequence[Placing]
    #: How many draws the procedure runs: the campaign's `winners`.
    draws: int
    #: v2: the secret revealed in campaign-ended, and the commitment of campaign-started.
    secret: str | None = None
    commitment: str | None = None
    #: When given (campaign-ended carries it), the entrants must hash to it.
    standings_sha256: str | None = None


@dataclass(frozen=True)
class DrawCheck:
    ok: bool
    seed: str
    winners: list[Placing]
    problems: list[str]
    #: What was compared and found equal, in words (the command prints them).
    checked: list[str] = field(default_factory=list)
    procedure: str = PROCEDURE


class _Findings:
    """What a check found: the problems, and what was compared and found equal."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked: list[str] = []

    def compare(self, computed: str, published: str | None, differs: str, same: str) -> None:
        if computed == published:
            self.checked.append(same)
        else:
            self.problems.append(differs)


def verify(published: Published) -> DrawCheck:
    """Re-run the draw from what was published and say what does not match."""
    if published.procedure not in PROCEDURES:
        raise ValueError(f"unknown draw procedure {published.procedure!r}")
    found = _Findings()
    entrants, cid = published.entrants, published.campaign_id
    if published.procedure == PROCEDURE_V1:
        seed, inputs = seed_for(cid, entrants), "standings"
    else:
        seed, inputs = _v2_seed(published, found), "secret and standings"
    if published.standings_sha256 is not None:
        digest = standings_sha256(cid, entrants)
        found.compare(
            digest,
            published.standings_sha256,
            f"standings differ: the entrants hash to {digest}, "
            f"campaign-ended published {published.standings_sha256}",
            f"standings hash to the published {digest}",
        )
    if seed is None:
        seed = published.seed  # no secret to compute it from: re-run with the published one
    else:
        found.compare(
            seed,
            published.seed,
            f"seed differs: re-computed {seed}, published {published.seed}",
            f"seed {seed} is what the {inputs} give",
        )
    winners = draw(entrants, seed, published.draws)
    expected = [(w.member_id, w.rank) for w in winners]
    got = [(w.member_id, w.rank) for w in published.winners]
    if expected != got:
        found.problems.append(f"winners differ: re-run gives {expected}, published {got}")
    ok = not found.problems
    return DrawCheck(ok, seed, winners, found.problems, found.checked, published.procedure)


def _v2_seed(published: Published, found: _Findings) -> str | None:
    """The v2 seed from the revealed secret, after checking it against the commitment."""
    try:
        secret = secret_from_hex(published.secret)
    except ValueError as exc:
        found.problems.append(f"secret: {exc} (revealed: {published.secret!r})")
        return None
    committed = commitment_of(secret)
    if published.commitment is None:
        found.problems.append(
            "no commitment published at the start: nothing shows the secret was fixed then"
        )
    else:
        found.compare(
            committed,
            published.commitment,
            f"commitment differs: SHA-256 of the revealed secret is {committed}, "
            f"the commitment published at the start is {published.commitment}",
            f"SHA-256 of the revealed secret is the commitment {committed}",
        )
    return seed_v2(secret, published.campaign_id, published.entrants)
