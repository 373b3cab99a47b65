"""Notifier rules with no I/O: which event becomes which message for whom, and its delivery id."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"
LOCALES = ("ru", "en")
_env = Environment(
    loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, autoescape=False,
    keep_trailing_newline=False,
)


@dataclass(frozen=True)
class Message:
    """One message for one member, before it is put on a channel."""

    member_id: str
    template: str
    category: str
    context: dict[str, object]


def delivery_id(cause_event_id: str, member_id: str, channel: str) -> str:
    """Deterministic: at most one delivery per cause event, member and channel."""
    digest = hashlib.sha256(f"{cause_event_id}:{member_id}:{channel}".encode()).hexdigest()
    return f"n_{digest[:32]}"


def render(template: str, locale: str, context: dict[str, object]) -> tuple[str, str]:
    """(title, body) of a template in the member's locale (ru when unknown)."""
    lang = locale if locale in LOCALES else "ru"
    text = _env.get_template(f"{lang}/{template}.j2").render(**context).strip()
    title, _, body = text.partition("\n")
    return title.strip(), body.strip()


def welcome(member_id: str, display_name: str) -> Message:
    return Message(member_id, "welcome", "account", {"name": display_name})
