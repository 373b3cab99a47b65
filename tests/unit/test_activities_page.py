"""The coordinator's check-in page as rendered, without a server: escaping, what each member's
state offers, the messages after an action, which shift is shown, a design that cannot be wider
than a 360 px phone, and a page that loads nothing from anywhere (the browser test,
tests/integration/test_activities_checkin_browser.py, measures the real thing)."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta

import segno

from services.activities import page_view as view
from services.activities.page_render import CSP, CSS, HEADERS, qr_svg, render_page, render_refusal
from shared.clock import epoch_ms

NOW = datetime(2026, 12, 12, 7, 0, tzinfo=UTC)
GRACE = timedelta(minutes=60)
ZONE = view.zone_of({"timezone": "Europe/Moscow"})


def ledger(shift_id: str = "s_1", starts: datetime = NOW, hours: float = 2, **over) -> dict:
    doc = {
        "_id": shift_id,
        "activity_id": "a_1",
        "role": "registration",
        "starts_ms": epoch_ms(starts),
        "ends_ms": epoch_ms(starts + timedelta(hours=hours)),
        "capacity": 2,
        "confirmed": 2,
        "waitlisted": 1,
        "status": "published",
        "due_ms": epoch_ms(starts + timedelta(hours=hours)),
        "code": "K7QX9M",
    }
    doc.update(over)
    return doc


def signup(member_id: str, status: str = "confirmed", **over) -> dict:
    return {"_id": f"su_{member_id}", "member_id": member_id, "status": status,
            "member_key": f"{epoch_ms(NOW)}:su_{member_id}", **over}  # fmt: skip


def page(signups: list[dict], members: dict, *, now: datetime = NOW, said=None, m=None) -> str:
    shift = ledger()
    activity = {"_id": "a_1", "title": "Tree planting", "timezone": "Europe/Moscow",
                "location": "Bitsa park", "shifts": {"s_1": {**shift, "n": 0}}}  # fmt: skip
    when = view.when_of(activity, shift, ZONE)
    shown = view.shift_view(shift, (signups, members, False), when, now, GRACE, ZONE, False)
    rows = shown.expected + shown.others
    tabs = view.shift_tabs(activity, [shift], "s_1", ZONE)
    return render_page(
        view.PageView("Tree planting", "Bitsa park", "Europe/Moscow", tabs, shown,
                      view.message(said, m, rows))
    )  # fmt: skip


def test_a_member_named_with_markup_renders_as_text_and_no_script_is_in_the_page():
    names = {
        "m_1": {"display_name": "<script>alert(1)</script>"},
        "m_2": {"display_name": '"><img src=x onerror=alert(2)>'},
    }
    html = page([signup("m_1"), signup("m_2")], names, said="arrived", m="m_1")

    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;: arrived." in html  # the message too


def test_the_page_loads_nothing_and_its_one_stylesheet_is_allowed_by_its_hash():
    html = page([signup("m_1")], {"m_1": {"display_name": "Anna"}})
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()

    assert f"style-src 'sha256-{digest}'" in CSP and "default-src 'none'" in CSP
    assert "form-action 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert " style=" not in html and "<script" not in html and "<link" not in html
    assert not re.search(r"(src|href|action)=\"(https?:)?//", html)  # nothing from elsewhere
    assert "url(" not in CSS and "@import" not in CSS and "@font-face" not in CSS
    assert HEADERS["Cache-Control"] == "no-store"
    assert HEADERS["Referrer-Policy"] == "no-referrer"
    assert HEADERS["X-Robots-Tag"].startswith("noindex")
    assert "<script" not in render_refusal("<b>", "<script>")


def test_the_design_cannot_be_wider_than_a_360_px_phone():
    html = page([signup("m_1")], {"m_1": {"display_name": "A" * 100}})
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    rules = {k.strip(): v for k, v in re.findall(r"([^{}]+)\{([^{}]*)\}", CSS)}
    # No fixed size wider than what is left of 360 px beside the margins.
    sizes = ("width", "min-width", "flex", "flex-basis", "padding", "margin", "gap", "left")
    for selector, body in rules.items():
        for prop, value in re.findall(r"([a-z-]+):([^;]+)", body):
            if prop not in sizes:
                continue
            for px in re.findall(r"(\d+)px", value):
                assert int(px) <= 240, (selector, prop, value)
            if prop in ("width", "min-width"):
                assert not re.search(r"\d(r?em|vw|ch)", value), (selector, prop, value)
    # Unbroken words (a long name, an id, a title) wrap instead of pushing the page wider.
    for selector in ("h1", "h2", ".name", ".id", ".said", ".muted", "nav.shifts a"):
        assert "overflow-wrap:anywhere" in rules[selector], selector
    assert "box-sizing:border-box" in rules["*"]
    assert "flex-wrap:wrap" in rules["form.acts"] and "flex-wrap:wrap" in rules["nav.shifts"]
    assert "width:100%" in rules["input"] and "width:100%" in rules["section.qr svg"]
    # Touch targets at least 44 px high.
    for selector in ("button", "input", "nav.shifts a", "summary", ".pages a"):
        assert re.search(r"min-height:(4[4-9]|5\d)px", rules[selector]), selector


def test_each_state_offers_only_the_buttons_that_apply():
    members: dict = {}
    rows = {
        r.member_id: r
        for r in (
            view.row_of(s, members.get(s["member_id"]), True, ZONE)
            for s in [
                signup("m_due"),
                signup("m_here", att="present", checked_in_ms=epoch_ms(NOW)),
                signup("m_gone", att="attended", checked_in_ms=epoch_ms(NOW),
                       checked_out_ms=epoch_ms(NOW + timedelta(minutes=90)), hours=1.5),
                signup("m_absent", att="no-show"),
                signup("m_wait", "waitlisted"),
                signup("m_off", "cancelled"),
                signup("m_walk", "walk-in", att="present", walk_in=1,
                       checked_in_ms=epoch_ms(NOW)),
                signup("erased-3f2a", att="present", checked_in_ms=epoch_ms(NOW)),
            ]
        )
    }  # fmt: skip

    def actions(member_id: str) -> list[str]:
        return [a for a, _, _ in rows[member_id].actions]

    assert actions("m_due") == ["check-in", "no-show"] and rows["m_due"].status == "signed up"
    assert actions("m_here") == ["check-out"] and rows["m_here"].status == "arrived"
    assert actions("m_gone") == [] and rows["m_gone"].detail == "arrived 10:00 · left 11:30 · 1.5 h"
    assert actions("m_absent") == [] and rows["m_absent"].status == "no-show"
    assert actions("m_wait") == ["check-in"] and not rows["m_wait"].expected
    assert actions("m_off") == ["check-in"] and rows["m_off"].status == "cancelled"
    assert actions("m_walk") == ["check-out"] and rows["m_walk"].walk_in
    assert rows["m_walk"].expected
    assert actions("erased-3f2a") == [] and rows["erased-3f2a"].name == "Erased member"
    closed = view.row_of(signup("m_due"), None, False, ZONE)
    assert closed.actions == () and closed.name == "Member m_due"


def test_messages_are_fixed_sentences_whatever_the_address_carries():
    rows = [view.row_of(signup("m_1"), {"display_name": "Anna"}, True, ZONE)]
    assert view.message("arrived", "m_1", rows) == view.Message(True, "Anna: arrived.", "m_1")
    walk_in = view.message("walk-in", "m_9", rows)  # not listed here: shown at the top
    assert walk_in == view.Message(True, "m_9: checked in as a walk-in.", None)
    refused = view.message("marked_no_show", "m_1", rows)
    assert not refused.ok and refused.text.startswith("Anna was marked as a no-show")
    assert view.message("<b>injected</b>", "m_1", rows) == view.Message(
        False, "Nothing was recorded."
    )
    assert view.message("arrived", "<script>", rows).text == "The member: arrived."
    assert view.message(None, "m_1", rows) is None
    html = page([signup("m_1")], {"m_1": {"display_name": "Anna"}}, said="Hacked!", m="m_1")
    assert "Hacked" not in html and "Nothing was recorded." in html
    # After an action, the page opens at the member's line (the redirect's #r-<id>): it says
    # what happened there, once.
    html = page([signup("m_1", att="present")], {"m_1": {"display_name": "Anna"}},
                said="arrived", m="m_1")  # fmt: skip
    row = html[html.index('id="r-m_1"') : html.index("</li>", html.index('id="r-m_1"'))]
    assert 'id="said" role="status">Anna: arrived.</p>' in row
    assert html.count("Anna: arrived.") == 1


def test_the_shift_shown_is_the_one_asked_else_open_now_else_the_next_else_the_last():
    morning = ledger("s_am", NOW - timedelta(hours=5), hours=2)
    noon = ledger("s_noon", NOW - timedelta(minutes=20), hours=2)
    evening = ledger("s_pm", NOW + timedelta(hours=6), hours=2)
    shifts = [morning, noon, evening]
    assert view.pick_shift(shifts, None, NOW, GRACE) == "s_noon"
    assert view.pick_shift(shifts, "s_pm", NOW, GRACE) == "s_pm"
    assert view.pick_shift(shifts, "s_unknown", NOW, GRACE) == "s_noon"
    assert view.pick_shift([morning, evening], None, NOW, GRACE) == "s_pm"
    # Within the grace after its end, a shift is still the one open.
    within_grace = NOW - timedelta(hours=2, minutes=30)
    assert view.pick_shift([morning, evening], None, within_grace, GRACE) == "s_am"
    assert view.pick_shift([morning], None, NOW + timedelta(days=1), GRACE) == "s_am"


def test_before_the_window_or_after_the_close_the_page_says_why_and_offers_no_button():
    early = page([signup("m_1")], {}, now=NOW - timedelta(minutes=31))
    assert "Attendance opens at Sat 12 Dec 09:30." in early
    assert 'value="check-in"' not in early and "Check in as walk-in" not in early
    late = page([signup("m_1")], {}, now=NOW + timedelta(hours=3, minutes=1))
    assert "Attendance for this shift is closed." in late and 'value="no-show"' not in late
    open_now = page([signup("m_1")], {}, now=NOW + timedelta(minutes=5))
    assert 'value="no-show"' in open_now and "Check in as walk-in" in open_now
    assert "Sat 12 Dec, 10:00–12:00" in open_now  # in the activity's time zone


def test_the_qr_code_is_a_regular_qr_code_of_the_shifts_code_with_the_code_in_text():
    svg = str(qr_svg("K7QX9M"))
    assert svg.startswith('<svg role="img" viewBox="0 0 29 29" class="qr">')  # version 1, not micro
    assert "<title>QR code of the check-in code K7QX9M</title>" in svg
    drawn = re.search(r'stroke="#000" d="([^"]+)"', svg).group(1)
    assert drawn in segno.make_qr("K7QX9M", error="m").svg_inline(scale=1, border=4)
    html = page([], {})
    assert '<span class="code">K7QX9M</span>' in html and "No one is signed up" in html
