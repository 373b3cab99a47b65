"""A member's engagement record: their facts by day, folded history, and the figures read from it.

One document per member (the `standing` collection) holds everything the member's score,
level, leaderboards and segments need, so recording a batch of facts is one read and one
guarded write per member, and every figure is computed from that one document. Pure: no I/O,
the time is passed in.

- `days`: the last KEEP_DAYS UTC days with activity, each with its points, decay mass (points
  grown to the fact's time from the day's start, see `domain.bucket_mass`), hours, facts and
  last participation. Older days are folded into `base`: their score at `base_day_ms`.
- `applied`: the ids of facts recorded in the last APPLIED_KEEP, so a redelivered event adds
  nothing (older redeliveries are caught by the consumer's processed-events record); `once`:
  the ids of facts a member earns once ever (a referral per referred member), kept for good.
- A fact dated after the time it is recorded counts as recorded then (`domain.as_of`).
- Lifetime figures (counts by kind, points, hours, last participation) are kept as they come.
- Derived fields, stored for the indexes: `lscore` (orders members by decayed score at any
  time), `rank_all`/`rank7`/`rank30` (leaderboard keys), the windows' points and when they next
  change, and `due_ms` (when the record must be looked at again: a window moves, decay demotes,
  a day is due for folding).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.engagement import domain
from shared.clock import epoch_ms, from_ms
from shared.query import descending_number

KEEP_DAYS = 62
APPLIED_KEEP = timedelta(days=7)
DAY_MS = 86_400_000
#: Leaderboard windows in whole UTC days: "7d" is today and the six days before.
WINDOWS = {"7d": 7, "30d": 30}


def day_key(day: datetime | date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def key_ms(key: str) -> int:
    return epoch_ms(datetime(int(key[:4]), int(key[4:6]), int(key[6:]), tzinfo=UTC))


def safe_key(fact_id: str) -> str:
    """A fact id usable as a field name (no dots, no leading $)."""
    if "." in fact_id or fact_id.startswith("$"):
        return "h" + hashlib.sha256(fact_id.encode()).hexdigest()[:32]
    return fact_id


@dataclass(frozen=True)
class Day:
    points: float = 0.0
    mass: float = 0.0
    hours: float = 0.0
    facts: int = 0
    last_ms: int = 0  # last participation that day (0: only joining)

    def add(self, fact: domain.Fact, rules: domain.Rules) -> Day:
        return Day(
            self.points + fact.points(rules),
            self.mass + domain.bucket_mass(fact, rules),
            self.hours + (fact.amount if fact.kind == "hour" else 0.0),
            self.facts + 1,
            max(self.last_ms, epoch_ms(fact.at)) if fact.participation else self.last_ms,
        )

    def as_doc(self) -> dict[str, Any]:
        return {
            "p": self.points,
            "m": self.mass,
            "h": self.hours,
            "n": self.facts,
            "l": self.last_ms,
        }

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Day:
        return cls(
            float(doc.get("p", 0)),
            float(doc.get("m", 0)),
            float(doc.get("h", 0)),
            int(doc.get("n", 0)),
            int(doc.get("l", 0)),
        )


@dataclass(frozen=True)
class Record:
    """What the `standing` document says about a member's activity."""

    days: dict[str, Day] = field(default_factory=dict)
    base_day_ms: int | None = None
    base_mass: float = 0.0
    #: The last folded day with participation, and how many consecutive active days ended on
    #: it: a streak reaching back past the kept days continues there.
    fold_last: str | None = None
    fold_run: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    points_total: float = 0.0
    hours_total: float = 0.0
    last_ms: int | None = None
    applied: dict[str, int] = field(default_factory=dict)
    #: The ids of facts earned once ever (domain.ONCE_KINDS: a referral per referred member),
    #: kept for good: a cause that comes back months later still finds its fact here.
    once: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, doc: dict[str, Any] | None) -> Record:
        doc = doc or {}
        base = doc.get("base") or {}
        return cls(
            days={k: Day.of(v) for k, v in (doc.get("days") or {}).items()},
            base_day_ms=int(base["day_ms"]) if base.get("day_ms") is not None else None,
            base_mass=float(base.get("mass", 0.0)),
            fold_last=doc.get("fold_last"),
            fold_run=int(doc.get("fold_run") or 0),
            counts={k: int(v) for k, v in (doc.get("counts") or {}).items()},
            points_total=float(doc.get("points_total") or 0.0),
            hours_total=float(doc.get("hours_total") or 0.0),
            last_ms=int(doc["last_ms"]) if doc.get("last_ms") else None,
            applied={k: int(v) for k, v in (doc.get("applied") or {}).items()},
            once={k: int(v) for k, v in (doc.get("once") or {}).items()},
        )

    @property
    def facts(self) -> int:
        return sum(self.counts.values())

    # -- recording ----------------------------------------------------------------------------

    def add(self, facts: Iterable[domain.Fact], rules: domain.Rules, now: datetime) -> Record:
        """The record with the facts not applied yet; older days folded; old ids pruned."""
        now_ms = epoch_ms(now)
        applied = {k: v for k, v in self.applied.items() if v >= now_ms - _ms(APPLIED_KEEP)}
        record = replace(self, applied=applied)
        for fact in facts:
            key = safe_key(fact.id)
            if key in record.applied or key in self.applied or key in record.once:
                continue
            record = record._with(domain.as_of(fact, now), rules)
            record.applied[key] = now_ms
            if fact.kind in domain.ONCE_KINDS:
                record = replace(record, once={**record.once, key: now_ms})
        return record.folded(now, rules)

    def _with(self, fact: domain.Fact, rules: domain.Rules) -> Record:
        day = domain.day_of(fact.at)
        counts = {**self.counts, fact.kind: self.counts.get(fact.kind, 0) + 1}
        last = self.last_ms
        if fact.participation:
            last = max(last or 0, epoch_ms(fact.at))
        common = {
            "counts": counts,
            "points_total": self.points_total + fact.points(rules),
            "hours_total": self.hours_total + (fact.amount if fact.kind == "hour" else 0.0),
            "last_ms": last,
        }
        if self.base_day_ms is not None and epoch_ms(day) <= self.base_day_ms:
            # A late fact from a day already folded: into the base, decayed to its day.
            gap = (self.base_day_ms - epoch_ms(day)) / _ms(rules.half_life)
            mass = self.base_mass + domain.bucket_mass(fact, rules) * 2.0**-gap
            return replace(self, base_mass=mass, **common)
        key = day_key(day)
        days = {**self.days, key: self.days.get(key, Day()).add(fact, rules)}
        return replace(self, days=days, **common)

    def folded(self, now: datetime, rules: domain.Rules) -> Record:
        """Days older than KEEP_DAYS moved into the base (their score at the base's day)."""
        oldest_kept = day_key(domain.day_of(now) - timedelta(days=KEEP_DAYS))
        old = sorted(k for k in self.days if k < oldest_kept)
        if not old:
            return self
        days = dict(self.days)
        base_ms, mass = self.base_day_ms, self.base_mass
        fold_last, fold_run = self.fold_last, self.fold_run
        half_life = _ms(rules.half_life)
        for key in old:
            folded = days.pop(key)
            day_ms = key_ms(key)
            if base_ms is None or day_ms > base_ms:
                mass = mass * 2.0 ** (-((day_ms - (base_ms or day_ms)) / half_life))
                base_ms = day_ms
            mass += folded.mass * 2.0 ** (-((base_ms - day_ms) / half_life))
            if folded.last_ms:
                previous = day_key(from_ms(day_ms - DAY_MS))
                fold_run = fold_run + 1 if fold_last == previous else 1
                fold_last = key
        return replace(
            self, days=days, base_day_ms=base_ms, base_mass=mass, fold_last=fold_last,
            fold_run=fold_run,
        )  # fmt: skip

    # -- reading ------------------------------------------------------------------------------

    def pairs(self) -> list[tuple[datetime, float]]:
        """(day, mass) of every kept day and of the base: what the score is made of."""
        found = [(from_ms(key_ms(k)), d.mass) for k, d in sorted(self.days.items())]
        if self.base_day_ms is not None:
            found.append((from_ms(self.base_day_ms), self.base_mass))
        return found

    def score(self, now: datetime, rules: domain.Rules) -> float:
        return domain.score_of_buckets(self.pairs(), now, rules)

    def log_score(self, rules: domain.Rules) -> float | None:
        """log2 of the score times 2^(t/half-life): the same at every t, so ordering members by
        it orders them by decayed score now and at any later time (decay is the same for all)."""
        half_life = _ms(rules.half_life)
        terms = [(epoch_ms(day) / half_life, mass) for day, mass in self.pairs() if mass > 0]
        if not terms:
            return None
        top = max(e for e, _ in terms)
        return top + math.log2(math.fsum(m * 2.0 ** (e - top) for e, m in terms))

    def window(self, today: datetime, days: int) -> tuple[float, int, int | None]:
        """Points and facts in the last `days` whole UTC days up to `today`, and when (epoch
        ms, start of a day) the oldest of them leaves the window (None: nothing in it)."""
        first = day_key(domain.day_of(today) - timedelta(days=days - 1))
        inside = [(k, d) for k, d in self.days.items() if k >= first]
        if not inside:
            return 0.0, 0, None
        oldest = min(k for k, _ in inside)
        points = math.fsum(d.points for _, d in inside)
        return points, sum(d.facts for _, d in inside), key_ms(oldest) + days * DAY_MS

    def active_days(self) -> list[date]:
        return [from_ms(key_ms(k)).date() for k, d in self.days.items() if d.last_ms]

    def streak(self, today: date) -> int:
        """Consecutive active UTC days ending today (or yesterday), through folded days too."""
        keys = self._active_keys()
        run = domain.streak(self.active_days(), today)
        if not run or self.fold_last is None:
            return run
        end = today if day_key(today) in keys else today - timedelta(days=1)
        before_first = end - timedelta(days=run)
        return run + self.fold_run if day_key(before_first) == self.fold_last else run

    def _active_keys(self) -> set[str]:
        return {k for k, d in self.days.items() if d.last_ms}


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


@dataclass(frozen=True)
class Figures:
    """The derived fields of a record at `now`, as stored for the indexes."""

    score: float
    level: str
    fields: dict[str, Any]
    unset: list[str]


def figures(
    member_id: str, record: Record, level: str, now: datetime, rules: domain.Rules
) -> Figures:
    """What to store beside the record so that indexes can answer leaderboards, segments and
    the periodic jobs without reading every member."""
    score = record.score(now, rules)
    fields: dict[str, Any] = {"last_ms": record.last_ms} if record.last_ms else {}
    unset: list[str] = []
    lscore = record.log_score(rules)
    if lscore is None:
        unset.append("lscore")
    else:
        fields["lscore"] = lscore
    if record.facts:
        fields["rank_all"] = f"{descending_number(record.points_total)}:{member_id}"
    else:
        unset.append("rank_all")
    due: list[int] = []
    for name, days in WINDOWS.items():
        points, count, until = record.window(now, days)
        short = name.removesuffix("d")
        fields[f"p{short}"] = points
        if count:
            fields[f"rank{short}"] = f"{descending_number(points)}:{member_id}"
            fields[f"w{short}_until_ms"] = until
            due.append(int(until))  # type: ignore[arg-type]
        else:
            unset += [f"rank{short}", f"w{short}_until_ms"]
    demote = demote_at(level, score, now, rules)
    if demote is not None:
        due.append(demote)
    if record.days:
        oldest = min(key_ms(k) for k in record.days)
        due.append(oldest + (KEEP_DAYS + 1) * DAY_MS)
    if due:
        fields["due_ms"] = min(due)
    else:
        unset.append("due_ms")
    return Figures(score, level, fields, unset)


def demote_at(level: str, score: float, now: datetime, rules: domain.Rules) -> int | None:
    """When decay alone takes the score below the demotion line of the level held (epoch ms)."""
    if domain.rank_of(level) == 0:
        return None
    line = rules.demotion_buffer * rules.threshold(level)
    if score < line:
        return epoch_ms(now)
    half_lives = math.log2(score / line) if score > 0 else 0.0
    return epoch_ms(now) + int(half_lives * _ms(rules.half_life)) + 1


def as_doc(record: Record) -> dict[str, Any]:
    """The stored form of the record's own fields (whole subdocuments: see shared.store)."""
    doc: dict[str, Any] = {
        "days": {k: d.as_doc() for k, d in record.days.items()},
        "counts": dict(record.counts),
        "points_total": record.points_total,
        "hours_total": record.hours_total,
        "applied": dict(record.applied),
        "fold_run": record.fold_run,
    }
    if record.once:
        doc["once"] = dict(record.once)
    if record.base_day_ms is not None:
        doc["base"] = {"day_ms": record.base_day_ms, "mass": record.base_mass}
    if record.fold_last is not None:
        doc["fold_last"] = record.fold_last
    return doc
