"""Rank keys: the one stored, indexed string a segment is read in, so a page stops after N.

A segment lists members by decayed score now, which changes every moment. But decay is the same
for everyone: with `t` the time of the member's last change, the score at any later moment `u` is
`score(u) = score(t) × 2^(−(u − t)/h)` (`h` the half-life), so

    log2 score(u) = log2 score(t) + t/h − u/h = L − u/h,   L = log2 score(t) + t/h.

`L` does not depend on `u` (the record's `log_score`, stored as `lscore`), and `−u/h` is the
same for every member at a given moment: ordering by `L` is ordering by the decayed score at any
moment after the last change, so `L` can be stored once when the score changes and indexed.

Each segment keeps its own key field, present only on the members in it, so that a page is one
range of one index read in order (`{key: {$gt: ""}}` sorted by the key): nothing is sorted on
reading and nothing outside the segment is stepped over. Each key is unique (it ends with the
member id), so ties need no second sort key. Pure: no I/O, the time is passed in.

- `loyal_key`: active members at loyal or ambassador; score first, then member id.
- `drift_key`: active members at a drift level whose last participation is at least the drift
  period old; score, then id. Set when a write sees it, or by the drift scan when the period
  passes (the scan flags the episode in the same update).
- `new_key`: active members who joined within the new-member window; score, then the newest,
  then id. Removed by the write `due_ms` calls for when the window closes; until then a read
  leaves out a member whose join fell out of the window (`joined_ms`).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from services.engagement import domain
from shared.clock import epoch_ms
from shared.documents import Doc
from shared.query import MS_DIGITS, descending_number

LOYAL_KEY = "loyal_key"
DRIFT_KEY = "drift_key"
NEW_KEY = "new_key"
SEGMENT_KEYS = (LOYAL_KEY, DRIFT_KEY, NEW_KEY)
#: Which key each segment is read in.
KEY_OF = {"loyal": LOYAL_KEY, "drifting": DRIFT_KEY, "new-promising": NEW_KEY}
#: Written with the keys: a standing without it was written before the keys existed (or by
#: hand) and gets its keys when a read meets it (`Insights.key_unkeyed`).
KEYS_VERSION_FIELD = "keys_v"
KEYS_VERSION = 1
_LATEST_MS = 10**MS_DIGITS - 1


def score_part(lscore: Any) -> str:
    """16 hex digits that sort by `lscore` descending; a missing or unreadable one sorts last."""
    try:
        value = float(lscore)
    except (TypeError, ValueError):
        value = -math.inf
    return descending_number(value if not math.isnan(value) else -math.inf)


def score_key(member_id: str, lscore: Any) -> str:
    """`<score, descending>:<member id>`: the decayed score's order at any moment, then the id."""
    return f"{score_part(lscore)}:{member_id}"


def newcomer_key(member_id: str, lscore: Any, joined_ms: int) -> str:
    """`<score, descending>:<joined, newest first>:<member id>`."""
    newest_first = _LATEST_MS - min(max(int(joined_ms), 0), _LATEST_MS)
    return f"{score_part(lscore)}:{newest_first:0{MS_DIGITS}d}:{member_id}"


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def is_drifting(doc: Doc, now_ms: int, rules: domain.Rules) -> bool:
    """Active, at a drift level, and no participation for the drift period (segment `drifting`)."""
    last_ms = int(doc.get("last_ms") or 0)
    return (
        doc.get("active") == 1
        and doc.get("level") in domain.DRIFT_LEVELS
        and last_ms > 0
        and last_ms + _ms(rules.drift_after) <= now_ms
    )


def newcomer_until(doc: Doc, rules: domain.Rules) -> int | None:
    """The last moment (epoch ms) the member is in `new-promising`; None when never."""
    if doc.get("active") != 1 or doc.get("joined_ms") is None:
        return None
    return int(doc["joined_ms"]) + _ms(rules.new_member_window)


def segment_keys(
    member_id: str, doc: Doc, now: datetime, rules: domain.Rules
) -> tuple[Doc, list[str]]:
    """The keys to set and to unset on a standing as it is written at `now` (`doc`: the standing
    as written: `active`, `level`, `lscore`, `last_ms`, `joined_ms`)."""
    now_ms = epoch_ms(now)
    fields: Doc = {KEYS_VERSION_FIELD: KEYS_VERSION}
    lscore = doc.get("lscore")
    if doc.get("active") == 1 and doc.get("level") in domain.LOYAL_LEVELS:
        fields[LOYAL_KEY] = score_key(member_id, lscore)
    if is_drifting(doc, now_ms, rules):
        fields[DRIFT_KEY] = score_key(member_id, lscore)
    until = newcomer_until(doc, rules)
    if until is not None and until >= now_ms:
        fields[NEW_KEY] = newcomer_key(member_id, lscore, int(doc["joined_ms"]))
    return fields, [k for k in SEGMENT_KEYS if k not in fields]


def keys_due(doc: Doc, now: datetime, rules: domain.Rules) -> int | None:
    """When a key must be looked at again without any new fact: the end of the new-member
    window (entering `drifting` is the drift scan's, through `drift_due_ms`)."""
    until = newcomer_until(doc, rules)
    if until is not None and until >= epoch_ms(now):
        return until + 1
    return None
