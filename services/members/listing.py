"""How members are listed, with no I/O: the sort key of the member list and the entries by
which the list is filtered on roles and interests (docs/members.md, "Why `member_tags`")."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, get_args

from shared import query
from shared.clock import epoch_ms
from shared.events import Role

#: A list key as `list_key` makes it; also the pattern of the list's cursors
#: (`shared.query.decode_cursor` refuses any other).
LIST_KEY_RE = re.compile(r"^\d{13}:[^:]+$")


def list_key(joined_at: datetime, member_id: str) -> str:
    """The listing order and cursor key: join time in epoch ms, then the id breaks ties.

    One unique string that never changes, so `{"list_key": {"$gt": cursor}}` is exact on
    every server. (Not a date comparison: nx-27017 compares dates to the second only.)
    """
    return query.order_key(epoch_ms(joined_at), member_id)


#: Every role a member can have: a listing by interest alone reads one tag per role.
ROLES: tuple[str, ...] = get_args(Role)
LISTED_STATUSES = ("active", "left")


def list_tags(roles: Iterable[str], interests: Iterable[str]) -> list[str]:
    """The tags a member is listed under besides status and region.

    Roles and interests are arrays, which neither server can index for a listing that must
    also stay in join order (nx-27017 compares an array's JSON text on `$eq`). So each member
    has one small entry per role and one per (role, interest) pair, and every filter of the
    member list is one tag: role -> `role:<r>`, role and interest -> `role:<r>|interest:<i>`,
    interest alone -> the same pair for each of the few roles, merged.
    """
    roles, interests = list(roles), list(interests)
    return [f"role:{r}" for r in roles] + [
        f"role:{r}|interest:{i}" for r in roles for i in interests
    ]


def tags_for_filter(role: str | None, interest: str | None) -> list[str]:
    """Which tags hold the members of a filtered listing (none: list the members directly)."""
    if role and interest:
        return [f"role:{role}|interest:{interest}"]
    if role:
        return [f"role:{role}"]
    if interest:
        return [f"role:{r}|interest:{interest}" for r in ROLES]
    return []


def tag_entry_id(member_id: str, tag: str, status: str, region: str | None) -> str:
    """Deterministic, so writing an entry twice is harmless; it changes with any of the
    values it is listed by, so a change adds new entries instead of editing old ones."""
    listed_by = json.dumps([tag, status, region], ensure_ascii=False).encode()
    return f"{member_id}:{hashlib.blake2b(listed_by, digest_size=10).hexdigest()}"


def tag_entries(member: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The listing entries a member should have now, by id (none once erased)."""
    status = member.get("status", "active")
    if status not in LISTED_STATUSES:
        return {}
    region = member.get("region")
    entries: dict[str, dict[str, Any]] = {}
    for tag in list_tags(member.get("roles") or [], member.get("interests") or []):
        entry_id = tag_entry_id(member["_id"], tag, status, region)
        entries[entry_id] = {
            "_id": entry_id,
            "tag": tag,
            "member_id": member["_id"],
            "status": status,
            "region": region,
            "list_key": member["list_key"],
        }
    return entries


def entry_holds(entry: Mapping[str, Any], member: Mapping[str, Any] | None) -> bool:
    """Is this entry one the member has now? (Otherwise it is left over from a change.)"""
    return (
        member is not None
        and entry.get("list_key") == member.get("list_key")
        and entry["_id"] in tag_entries(member)
    )
