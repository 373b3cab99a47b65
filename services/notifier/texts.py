"""The text of a stored delivery, rendered when it is read (the inbox) or sent (a push).

A delivery keeps its template, locale, facts (`context`) and the ids of the members its text
names (`mentions`: template variable -> member id), never a rendered text with names in it.
Names come from the projection at rendering time, so when a member is erased (their projection
becomes an anonymous tombstone) the texts that named them in other members' inboxes no longer
do, with nothing to find and rewrite: the cost of an erasure does not grow with how often the
member was mentioned. A renamed member is shown under the new name, too.

A digest keeps one such item per message it collects, and is rendered the same way.
Deliveries stored by an earlier version carry `title` and `body` and are shown as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from services.notifier.templates import render
from services.notifier.timing import DEFAULT_ZONE


def mentioned(docs: Iterable[Mapping[str, Any]]) -> set[str]:
    """The members the texts of these deliveries name (digest items included)."""
    ids: set[str] = set()
    for doc in docs:
        for part in (doc, *(doc.get("items") or {}).values()):
            ids.update(str(m) for m in (part.get("mentions") or {}).values())
    return ids


def _fill(
    part: Mapping[str, Any], name: str, names: Mapping[str, str], timezone: Any = None
) -> dict[str, Any]:
    """The part's facts with the recipient's name and time zone (times of shifts are shown in
    it) and the mentioned members' current names (None for one who is unknown or erased: the
    templates say "—" or "your friend")."""
    return {
        "timezone": str(timezone or DEFAULT_ZONE),
        **(part.get("context") or {}),
        "name": name,
        **{var: names.get(str(mid)) or None for var, mid in (part.get("mentions") or {}).items()},
    }


def _item(
    item: Mapping[str, Any],
    locale: str | None,
    name: str,
    names: Mapping[str, str],
    timezone: Any = None,
) -> dict[str, str]:
    if "template" not in item:  # stored by an earlier version: already rendered
        return {"title": str(item.get("title", "")), "body": str(item.get("body", ""))}
    title, body = render(item["template"], locale, _fill(item, name, names, timezone))
    return {"title": title, "body": body}


def delivery_text(
    doc: Mapping[str, Any], name: str, names: Mapping[str, str], locale: str | None = None
) -> tuple[str, str]:
    """(title, body) of a delivery for its recipient called `name`; `names` are the current
    display names of the members it mentions (`mentioned`). `locale` overrides the one the
    delivery was planned in (a digest is written in the member's locale of the day it goes)."""
    lang = locale or doc.get("locale")
    if doc["template"] == "digest":
        items = sorted((doc.get("items") or {}).values(), key=lambda i: i.get("at_ms", 0))
        rendered = [_item(i, lang, name, names, doc.get("timezone")) for i in items]
        return render("digest", lang, {"name": name, "items": rendered})
    if "context" not in doc:  # stored by an earlier version: already rendered
        return str(doc["title"]), str(doc["body"])
    return render(doc["template"], lang, _fill(doc, name, names, doc.get("timezone")))
