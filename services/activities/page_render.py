"""The check-in page as HTML: its templates (Jinja2, every value escaped), its one inline
stylesheet, the QR code of a shift's check-in code (inline SVG), and the security headers of
every answer (a Content-Security-Policy that allows that stylesheet by its hash and nothing
else to load: no script, no font, no image from anywhere)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import segno
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from services.activities.page_view import ROWS_PER_PAGE, PageView

TEMPLATES = Path(__file__).parent / "templates"
#: The page's only style, inlined (no request leaves for it).
CSS = (TEMPLATES / "page.css").read_text(encoding="utf-8").strip()
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()

#: Nothing loads but the inline stylesheet (by its hash) and data: images; forms post only
#: here; no page may frame it; no base URL may be changed.
CSP = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: The link is the credential: the page is never cached, never sent as a referrer, never
#: indexed, never framed, never sniffed as another type.
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def qr_svg(code: str) -> Markup:
    """The code as a QR code (a regular one, never Micro QR, which phones rarely read), inline
    SVG sized by the page (viewBox only), black on a white quiet zone."""
    qr = segno.make_qr(code, error="m")
    svg = qr.svg_inline(
        scale=1,
        border=4,
        omitsize=True,
        dark="#000",
        light="#fff",
        title=f"QR code of the check-in code {code}",
        svgclass="qr",
        lineclass=None,
    )
    return Markup(svg.replace("<svg ", '<svg role="img" ', 1))


def render_page(view: PageView) -> str:
    return _env.get_template("checkin.html.j2").render(
        view=view, css=Markup(CSS), rows_per_page=ROWS_PER_PAGE, qr=qr_svg
    )


def render_refusal(heading: str, text: str) -> str:
    return _env.get_template("refused.html.j2").render(heading=heading, text=text, css=Markup(CSS))
