"""The unsubscribe link of marketing e-mail: a page to confirm, and the one-click POST.

`/unsubscribe/{token}` is outside `/v1`: whoever holds the link is its authority (the token is
signed for one member with `SARAFAN_UNSUBSCRIBE_SECRET`, shared/unsubscribe.py), no API key.
`GET` shows a page with a button and changes nothing, since mail scanners and link previews
follow links; `POST` (the button, or a mailbox provider's RFC 8058 one-click request, whose body
is `List-Unsubscribe=One-Click`) withdraws the member's marketing consent through the same use
case as a PATCH would. Both answer the same for any genuine token, whoever it names (a member
who left, was erased, never was, or already withdrew): the answer is no oracle. A token that
was not made with the secret is 400, a genuine one past its time 410.

Answers are small pages in Russian and English (a client asking for `application/json` gets
JSON, errors in the one error shape). The links' events carry `keyid: unsubscribe-link`.
"""

from __future__ import annotations

import html
import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.members import usecases
from services.members.context import Members, MembersDep
from shared import unsubscribe
from shared.http.errors import error_body
from shared.logs import key_id_var

log = logging.getLogger("sarafan.members.unsubscribe")

router = APIRouter(tags=["unsubscribe"])

#: The audit name of a change made through a link (the events' `keyid`; no key has it: key ids
#: have no hyphen).
LINK_KEY_ID = "unsubscribe-link"
HEADERS = {
    # The token is in the URL: never cached, never sent on as a Referer, never indexed.
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}
#: (Russian, English) of each answer: the title and a sentence.
TEXTS = {
    "confirm": (
        ("Отписаться от рассылки?", "Вы больше не будете получать новости и кампании сообщества."),
        ("Unsubscribe?", "You will no longer receive the community's news and campaigns."),
    ),
    "done": (
        ("Вы отписались", "Новости и кампании сообщества больше не придут."),
        ("You are unsubscribed", "The community's news and campaigns will no longer be sent."),
    ),
    "invalid_link": (
        ("Ссылка повреждена", "Откройте ссылку из письма целиком или напишите организаторам."),
        ("This link is broken", "Open the whole link from the e-mail, or write to the organisers."),
    ),
    "link_expired": (
        ("Ссылка устарела", "Воспользуйтесь ссылкой из более нового письма."),
        ("This link has expired", "Use the link in a more recent e-mail."),
    ),
    "unavailable": (
        ("Не получилось", "Попробуйте ещё раз через минуту."),
        ("That did not work", "Please try again in a minute."),
    ),
}
BUTTON = ("Отписаться", "Unsubscribe")
PAGE = """<!DOCTYPE html>
<html lang="ru"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>
<body style="font-family: sans-serif; line-height: 1.5; max-width: 36em; margin: 2em auto;">
{sections}{form}</body></html>
"""
FORM = """<form method="post">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit" style="font-size: 1.1em; padding: 0.4em 1.2em;">{label}</button>
</form>
"""


def _page(kind: str, status: int, *, form: bool = False) -> HTMLResponse:
    sections = "".join(
        f'<h1 style="font-size: 1.3em;">{html.escape(title)}</h1>\n<p>{html.escape(text)}</p>\n'
        for title, text in TEXTS[kind]
    )
    button = FORM.format(label=html.escape(" / ".join(BUTTON))) if form else ""
    title = html.escape(" / ".join(t for t, _ in TEXTS[kind]))
    return HTMLResponse(
        PAGE.format(title=title, sections=sections, form=button), status, headers=HEADERS
    )


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _answer(request: Request, kind: str, status: int, *, form: bool = False) -> Response:
    if not _wants_json(request):
        return _page(kind, status, form=form)
    message = TEXTS[kind][1][1]
    if status >= 400:
        return JSONResponse(error_body(kind, message), status, headers=HEADERS)
    return JSONResponse({"status": kind, "message": message}, status, headers=HEADERS)


def _member_of(request: Request, members: Members, token: str) -> str | Response:
    """The member the token names, or the answer refusing it."""
    secret = members.unsubscribe_secret
    if secret is None:
        log.warning("an unsubscribe link was used, but SARAFAN_UNSUBSCRIBE_SECRET is not set")
        return _answer(request, "unavailable", 503)
    try:
        return unsubscribe.verify(secret, token, unsubscribe.MARKETING, time.time())
    except unsubscribe.LinkExpired:
        return _answer(request, "link_expired", 410)
    except unsubscribe.LinkInvalid:
        return _answer(request, "invalid_link", 400)


PAGES: dict[int | str, dict[str, Any]] = {
    status: {"description": what, "content": {"text/html": {}, "application/json": {}}}
    for status, what in (
        (400, "not a link this service made (tampered or cut)"),
        (410, "a genuine link past its time"),
        (503, "links are not set up here (no SARAFAN_UNSUBSCRIBE_SECRET), or try again"),
    )
}


@router.get("/unsubscribe/{token}", response_class=HTMLResponse, responses=PAGES)
async def unsubscribe_page(token: str, request: Request, members: MembersDep) -> Response:
    """The page an unsubscribe link opens: a button that unsubscribes. Changes nothing."""
    found = _member_of(request, members, token)
    if isinstance(found, Response):
        return found
    return _answer(request, "confirm", 200, form=True)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse, responses=PAGES)
async def withdraw_marketing(token: str, request: Request, members: MembersDep) -> Response:
    """Withdraw the member's marketing consent (RFC 8058 one-click: the body, if any, is
    `List-Unsubscribe=One-Click`); the same answer whoever the link names, however often."""
    found = _member_of(request, members, token)
    if isinstance(found, Response):
        return found
    audit = key_id_var.set(LINK_KEY_ID)
    try:
        await members.use_cases.withdraw_marketing(found)
    except usecases.KeptChanging:
        return _answer(request, "unavailable", 503)
    finally:
        key_id_var.reset(audit)
    return _answer(request, "done", 200)
