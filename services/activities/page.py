"""The coordinator's check-in page, behind a check-in link (`/checkin/<token>`): no API key, the
link is the credential.

`GET /checkin/{token}` shows the activity's shifts, the chosen shift's people with their status
and the buttons that apply (arrived, left, no-show), a walk-in form and the shift's self
check-in code as a QR code. `POST /checkin/{token}` (a form: shift_id, member_id, action) records
through `Attendance.record`, the API's own use case, `recorded_by` the coordinator the link was
made for, then redirects back (303) to the page with what happened (`said`). Nothing changes on
a GET. A link that is unknown, revoked (404), expired or whose activity was cancelled (410)
shows a page saying so and records nothing.

Cross-site forms cannot act: no cookie or other ambient credential exists here (a forged form
would have to know the token), and a POST whose `Sec-Fetch-Site` or `Origin` says it came from
another site is refused anyway (403). Each link may record `PAGE_WRITES_PER_MINUTE` actions a
minute in each replica (429 beyond). Tokens are never logged: the access log, the metrics and
the kernel name the route's template (`/checkin/{token}`), and this module logs nothing.
"""

from __future__ import annotations

import math
from typing import cast
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.activities.context import Activities, ActivitiesDep
from services.activities.domain import Conflict, NotFound, Refused
from services.activities.page_render import HEADERS, render_page, render_refusal
from services.activities.page_view import (
    ACTIONS,
    DONE,
    IDENT_RE,
    ROWS_PER_PAGE,
    PageView,
    Row,
    in_order,
    message,
    outcome,
    pick_shift,
    shift_tabs,
    shift_view,
    when_of,
    zone_of,
)
from services.activities.store import FIRST_KEY
from services.activities.usecases import Mark
from services.activities.usecases.attendance import Action
from services.activities.usecases.links import CANCELLED, EXPIRED
from shared.documents import Doc
from shared.http import WriteLimits
from shared.keys import Principal
from shared.query import ORDER_KEY_RE

router = APIRouter(tags=["check-in page"], include_in_schema=False)

#: Actions one link may record a minute (per replica): a coordinator at a busy gate does a few
#: dozen; a leaked link cannot rewrite a large shift in a moment.
PAGE_WRITES_PER_MINUTE = 120
#: A form is three short fields.
FORM_MAX_BYTES = 4096
FORM = "application/x-www-form-urlencoded"
#: Why a link opens nothing, as the page says it: (status, heading, text).
LINK_REFUSALS = {
    EXPIRED: (410, "This check-in link has expired", "It was valid until the activity ended."),
    CANCELLED: (410, "This activity was cancelled", "Its check-in link no longer works."),
}
UNKNOWN_LINK = (
    404,
    "This check-in link does not work",
    "It was revoked (a newer link replaces it), or the address is incomplete: check that the "
    "whole link was copied.",
)


def page_limits() -> WriteLimits:
    """Each link's rate of actions (the context's `page_limits`, one per service process)."""
    return WriteLimits(PAGE_WRITES_PER_MINUTE)


@router.get("/checkin/{token}")
async def checkin_page(token: str, request: Request, a: ActivitiesDep) -> Response:
    """The page: shifts, the chosen shift's people and buttons, walk-ins, the QR code."""
    now = a.now()
    opened = await a.links.open(token, now)
    if opened.activity is None:
        return _link_refused(opened.refused)
    asked = request.query_params
    view = await _view(a, opened.activity, asked.get("shift"), asked.get("after"))
    view.message = message(asked.get("said"), asked.get("m"), view_rows(view))
    return _html(render_page(view))


@router.post("/checkin/{token}")
async def checkin_action(token: str, request: Request, a: ActivitiesDep) -> Response:
    """One action from the page's forms, recorded as the API records it; back to the page."""
    if _cross_site(request, a.links.public_url):
        return _refusal(403, "Refused", "This form was sent from another site.")
    now = a.now()
    opened = await a.links.open(token, now)
    if opened.activity is None:
        return _link_refused(opened.refused)
    limits = a.page_limits
    link = Principal(f"link:{opened.link_id[:16]}", frozenset())  # the limits' own rate
    wait = limits.take(link)
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        return _refusal(
            429, "Too many actions", f"Wait {seconds} s, then go back and try again.",
            {"Retry-After": str(seconds)},
        )  # fmt: skip
    form = await _form(request)
    shift_id, member_id, action = (
        form.get(k, "").strip() for k in ("shift_id", "member_id", "action")
    )
    if not IDENT_RE.fullmatch(shift_id) or action not in ACTIONS:
        return _back(None, "invalid_form", None)
    if not IDENT_RE.fullmatch(member_id):
        return _back(shift_id, "invalid_member_id", None)
    activity_id = opened.activity["_id"]
    mark = Mark(shift_id, member_id, cast(Action, action), None, opened.recorded_by, activity_id)
    try:
        said = outcome(action, await a.attendance.record(mark, now))
    except NotFound:
        said = "not_found"
    except (Conflict, Refused) as refused:
        said = refused.code
    return _back(shift_id, said, member_id)


async def _view(a: Activities, activity: Doc, asked: str | None, after: str | None) -> PageView:
    now, zone = a.now(), zone_of(activity)
    ledgers = in_order(activity, await a.store.ledgers_of(activity["_id"]))
    shift = None
    if ledgers:
        chosen = pick_shift(ledgers, asked, now, a.grace)
        ledger = next(d for d in ledgers if d["_id"] == chosen)
        start = after if after and ORDER_KEY_RE.fullmatch(after) else FIRST_KEY
        listed = await a.signups.on_shift(activity["_id"], chosen, start, ROWS_PER_PAGE)
        when = when_of(activity, ledger, zone)
        shift = shift_view(ledger, listed, when, now, a.grace, zone, paged=start != FIRST_KEY)
    return PageView(
        title=str(activity.get("title") or ""),
        location=str(activity.get("location") or ""),
        zone=zone.key,
        tabs=shift_tabs(activity, ledgers, shift.shift_id if shift else "", zone),
        shift=shift,
        message=None,
    )


def view_rows(view: PageView) -> list[Row]:
    return [*view.shift.expected, *view.shift.others] if view.shift else []


async def _form(request: Request) -> dict[str, str]:
    """The posted form's fields (first value each); {} for anything that is not a small form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM:
        return {}
    body = await request.body()
    if len(body) > FORM_MAX_BYTES:
        return {}
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in fields.items() if v}


def _cross_site(request: Request, public_url: str) -> bool:
    """A form posted from another site. Browsers say where a request came from in
    `Sec-Fetch-Site`; only one that does not (an older one) is judged by its `Origin`, which
    must then be the service's public address or the address this request came to. `Origin:
    null` is what a browser sends for this page's own forms (its `Referrer-Policy:
    no-referrer` hides the origin of its POSTs), so it is not a refusal by itself."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return False
    public = urlsplit(public_url)
    here = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return origin not in {f"{public.scheme}://{public.netloc}", here}


def _back(shift_id: str | None, said: str, member_id: str | None) -> Response:
    """303 to the page (a query-only address: the same path, whatever proxy prefix it has),
    at the member's line when the action went through, else at the message."""
    query = {k: v for k, v in (("shift", shift_id), ("said", said), ("m", member_id)) if v}
    anchor = f"r-{member_id}" if member_id and said in DONE else "said"
    return RedirectResponse(f"?{urlencode(query)}#{anchor}", status_code=303, headers=HEADERS)


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**HEADERS, **(headers or {})})


def _refusal(
    status: int, heading: str, text: str, headers: dict[str, str] | None = None
) -> HTMLResponse:
    return _html(render_refusal(heading, text), status, headers)


def _link_refused(why: str | None) -> HTMLResponse:
    status, heading, text = LINK_REFUSALS.get(why or "", UNKNOWN_LINK)
    return _refusal(status, heading, text)
