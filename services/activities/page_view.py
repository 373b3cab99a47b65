"""What the coordinator's check-in page shows, as plain values: the activity's shifts, the
chosen shift's people with their status and the buttons that fit it, the message after an
action, the shift's self check-in code as a QR code. Pure: no I/O, the time is passed in.

The page records through `Attendance.record` like the API (`page.py`); this module only
decides what to show. Every text it makes is a fixed sentence with names filled in, escaped by
the template (`page_render.py`): nothing a URL carries is shown as it came.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.activities import domain
from services.activities.presence import CHECKIN_OPENS_BEFORE
from shared.clock import epoch_ms, from_ms
from shared.documents import Doc

#: A member id or shift id as the API accepts them (shared.limits.Ident).
IDENT_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
#: People listed per page of a shift (the rest behind "next").
ROWS_PER_PAGE = 100
#: The buttons: the API's action and what the coordinator reads.
ARRIVED, LEFT, NO_SHOW = "check-in", "check-out", "no-show"
ACTIONS = frozenset({ARRIVED, LEFT, NO_SHOW})

#: What an action did (`said` after the redirect), and why one was refused (the use cases'
#: refusal codes). `{who}` is the member's name as listed, or the id typed.
DONE = {
    "arrived": "{who}: arrived.",
    "walk-in": "{who}: checked in as a walk-in.",
    "left": "{who}: left. Their hours are recorded.",
    "no-show": "{who}: marked as a no-show.",
}
REFUSED = {
    "not_signed_up": "{who} is not on this shift: check them in first.",
    "not_checked_in": "{who} has not arrived yet.",
    "already_checked_out": "{who} has left already: their hours are recorded.",
    "marked_no_show": "{who} was marked as a no-show (an organiser can correct it).",
    "not_a_no_show": "{who} cannot be a no-show: only a signed-up member who has not arrived.",
    "attendance_closed": "Attendance for this shift is closed.",
    "shift_closed": "This shift is not open: its activity is not published or was cancelled.",
    "invalid_time": "Attendance for this shift is not open now.",
    "unknown_member": "No member {who} is known here: check the id, or ask them to check "
    "in with the code below.",
    "member_left": "{who} has left the community.",
    "not_found": "There is no such shift in this activity.",
    "invalid_member_id": "That is not a member id (letters, digits and . _ : - only).",
    "invalid_form": "The form was incomplete: nothing was recorded. Try again.",
}
NOT_RECORDED = "Nothing was recorded."


@dataclass(frozen=True)
class Message:
    ok: bool
    text: str
    #: The member whose line shows it (an action that went through, on a member listed here:
    #: the page opens at their line); else it shows at the top.
    member_id: str | None = None


@dataclass(frozen=True)
class Row:
    """One person on the shift, as the page lists them."""

    member_id: str
    name: str
    #: What the coordinator reads: signed up, arrived, left, no-show, waitlisted, cancelled.
    status: str
    #: Its colour on the page: due, here, gone, absent, off.
    tone: str
    walk_in: bool
    #: When they came and went, and their hours.
    detail: str
    #: The buttons: (action, label, style), in the order shown.
    actions: tuple[tuple[str, str, str], ...]
    #: Listed among the expected (confirmed, walk-ins, anyone whose attendance is recorded);
    #: else with the waitlisted and cancelled below them.
    expected: bool


@dataclass(frozen=True)
class ShiftTab:
    shift_id: str
    role: str
    when: str
    selected: bool


@dataclass
class ShiftView:
    shift_id: str
    role: str
    when: str
    code: str
    #: Attendance can be recorded now (from 30 minutes before the start to the end plus the
    #: grace, the activity published); else `note` says why not.
    open: bool
    note: str
    figures: str
    expected: list[Row] = field(default_factory=list)
    others: list[Row] = field(default_factory=list)
    #: The key after the last person listed, when more follow.
    next_after: str | None = None
    paged: bool = False


@dataclass
class PageView:
    title: str
    location: str
    zone: str
    tabs: list[ShiftTab]
    shift: ShiftView | None
    message: Message | None


def zone_of(activity: Doc) -> ZoneInfo:
    try:
        return ZoneInfo(str(activity.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def span_text(starts_ms: int, ends_ms: int, zone: ZoneInfo) -> str:
    """`Sat 12 Dec, 09:30–12:00` in the activity's zone (both days when it ends on another)."""
    start, end = from_ms(starts_ms).astimezone(zone), from_ms(ends_ms).astimezone(zone)
    if start.date() == end.date():
        return f"{start:%a %d %b}, {start:%H:%M}–{end:%H:%M}"
    return f"{start:%a %d %b %H:%M} – {end:%a %d %b %H:%M}"


def pick_shift(ledgers: list[Doc], asked: str | None, now: datetime, grace: timedelta) -> str:
    """The shift asked for, else the one whose attendance is open now, else the next to start,
    else the last (`ledgers` in order of start)."""
    ids = [d["_id"] for d in ledgers]
    if asked in ids:
        return str(asked)
    now_ms = epoch_ms(now)
    for ledger in ledgers:
        opens, closes = _window(ledger, grace)
        if opens <= now_ms < closes:
            return str(ledger["_id"])
    upcoming = [d["_id"] for d in ledgers if int(d["starts_ms"]) > now_ms]
    return str(upcoming[0] if upcoming else ids[-1])


def _window(ledger: Doc, grace: timedelta) -> tuple[int, int]:
    opens = int(ledger["starts_ms"]) - int(CHECKIN_OPENS_BEFORE.total_seconds() * 1000)
    return opens, int(ledger["ends_ms"]) + int(grace.total_seconds() * 1000)


def attendance_note(ledger: Doc, now: datetime, grace: timedelta, zone: ZoneInfo) -> str:
    """Why attendance cannot be recorded now, or "" when it can."""
    if ledger.get("status") != "published":
        return "This shift is not open: its activity is not published or was cancelled."
    opens, closes = _window(ledger, grace)
    now_ms = epoch_ms(now)
    if ledger.get("due_ms") is None or now_ms > closes:
        return "Attendance for this shift is closed."
    if now_ms < opens:
        return f"Attendance opens at {from_ms(opens).astimezone(zone):%a %d %b %H:%M}."
    return ""


def figures_text(ledger: Doc) -> str:
    n = {k: int(ledger.get(k) or 0) for k in ("capacity", "confirmed", "waitlisted")}
    came = {k: int(ledger.get(k) or 0) for k in ("attended", "walk_ins", "no_shows")}
    return (
        f"Signed up {n['confirmed']} of {n['capacity']} · waitlist {n['waitlisted']} · "
        f"came {came['attended']} (walk-ins {came['walk_ins']}) · no-shows {came['no_shows']}"
    )


def display_name(member_id: str, member: Doc | None) -> str:
    if member_id.startswith("erased") or (member or {}).get("status") == "erased":
        return "Erased member"
    name = str((member or {}).get("display_name") or "").strip()
    return name or f"Member {member_id}"


def row_of(signup: Doc, member: Doc | None, open_now: bool, zone: ZoneInfo) -> Row:
    """A person's line: status, times and the buttons that apply to them now."""
    member_id = str(signup["member_id"])
    status, att = signup["status"], signup.get("att")
    erased = member_id.startswith("erased")
    walk_in = bool(signup.get("walk_in")) or status == "walk-in"
    label, tone, actions = _state(status, att)
    return Row(
        member_id=member_id,
        name=display_name(member_id, member),
        status=label,
        tone=tone,
        walk_in=walk_in,
        detail=_times(signup, zone),
        actions=actions if open_now and not erased else (),
        expected=status in ("confirmed", "walk-in") or att is not None,
    )


def _state(status: str, att: str | None) -> tuple[str, str, tuple[tuple[str, str, str], ...]]:
    if att == "present":
        return "arrived", "here", ((LEFT, "Left", "left"),)
    if att == "attended":
        return "left", "gone", ()
    if att == "no-show":
        return "no-show", "absent", ()
    if status == "confirmed":
        return "signed up", "due", ((ARRIVED, "Arrived", "arrived"), (NO_SHOW, "No-show", "noshow"))
    # Waitlisted or cancelled, and here anyway: they come as walk-ins (no seat was theirs).
    return status, "off", ((ARRIVED, "Arrived (walk-in)", "arrived"),)


def _times(signup: Doc, zone: ZoneInfo) -> str:
    parts = []
    if signup.get("checked_in_ms") is not None:
        parts.append(f"arrived {from_ms(int(signup['checked_in_ms'])).astimezone(zone):%H:%M}")
    if signup.get("checked_out_ms") is not None:
        parts.append(f"left {from_ms(int(signup['checked_out_ms'])).astimezone(zone):%H:%M}")
    if signup.get("hours") is not None:
        parts.append(f"{float(signup['hours']):g} h")
    return " · ".join(parts)


def shift_view(
    ledger: Doc,
    listed: tuple[list[Doc], dict[str, Doc], bool],
    when: str,
    now: datetime,
    grace: timedelta,
    zone: ZoneInfo,
    paged: bool,
) -> ShiftView:
    """The chosen shift: its figures, whether attendance is open, and a page of its people
    (`listed`: their sign-ups in the order they came, the members by id, whether more follow)."""
    signups, members, more = listed
    note = attendance_note(ledger, now, grace, zone)
    view = ShiftView(
        shift_id=ledger["_id"],
        role=str(ledger.get("role") or ""),
        when=when,
        code=str(ledger.get("code") or ""),
        open=not note,
        note=note,
        figures=figures_text(ledger),
        paged=paged,
    )
    for signup in signups:
        if signup["status"] == "pending":  # not decided yet: nobody's seat
            continue
        row = row_of(signup, members.get(signup["member_id"]), view.open, zone)
        (view.expected if row.expected else view.others).append(row)
    if more and signups:
        view.next_after = str(signups[-1]["member_key"])
    return view


def outcome(action: str, signup: Doc) -> str:
    """What an action that went through did, as a `said` key."""
    if action == ARRIVED:
        return "walk-in" if signup.get("walk_in") else "arrived"
    return "left" if action == LEFT else "no-show"


def message(said: str | None, member_id: str | None, rows: list[Row]) -> Message | None:
    """The sentence after an action. Only fixed sentences: a key not in the tables says that
    nothing was recorded; the member is named as listed on this page, else by the id."""
    if not said:
        return None
    named = {r.member_id: r.name for r in rows}
    who = "The member"
    if member_id and IDENT_RE.fullmatch(member_id):
        who = named.get(member_id, member_id)
    if said in DONE:
        listed = member_id if member_id in named else None
        return Message(True, DONE[said].format(who=who), listed)
    return Message(False, REFUSED.get(said, NOT_RECORDED).format(who=who))


def shift_tabs(activity: Doc, ledgers: list[Doc], selected: str, zone: ZoneInfo) -> list[ShiftTab]:
    return [
        ShiftTab(
            d["_id"], str(d.get("role") or ""), when_of(activity, d, zone), d["_id"] == selected
        )
        for d in ledgers
    ]


def when_of(activity: Doc, ledger: Doc, zone: ZoneInfo) -> str:
    definition = (activity.get("shifts") or {}).get(ledger["_id"]) or ledger
    return span_text(int(definition["starts_ms"]), int(definition["ends_ms"]), zone)


def in_order(activity: Doc, ledgers: list[Doc]) -> list[Doc]:
    """The activity's shift ledgers by start (as the API lists them)."""
    by_id = {d["_id"]: d for d in ledgers}
    return [by_id[s] for s in domain.shift_ids_in_order(activity) if s in by_id]
