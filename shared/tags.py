"""Tags (interests, skills, post tags): one normal form everywhere."""

from __future__ import annotations

from collections.abc import Iterable


def normalise_tags(values: Iterable[str]) -> list[str]:
    """Trimmed, inner spaces collapsed, lower case, each once, in the order first given.

    The order is the writer's (a member lists her interests as she likes); a comparison that
    must not depend on it compares sets."""
    seen: dict[str, None] = {}
    for value in values:
        tag = " ".join(value.split()).lower()
        if tag:
            seen.setdefault(tag, None)
    return list(seen)
