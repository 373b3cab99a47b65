"""What member events change in the notifier's member projection (pure: no I/O).

The projection keeps the fields a message needs (name, region, roles, interests, locale, time
zone, contacts, consent) and some of its own: `coordinator_region`, the scalar a region's
coordinators are found by, `blocked`, the channels known to fail for good, and beside it one
interest entry per member and interest (`interest_entries`), what an activity's audience is
found by. The store writes
what these functions return; the rules about what changes live here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.documents import Doc
from shared.events import MemberJoined
from shared.tags import normalise_tags

#: Copied as they are from member-joined and member-updated.
PROJECTION_FIELDS = ("display_name", "region", "roles", "interests", "locale", "timezone")
#: Contacts that an earlier shape of member-updated carried at the top level of `changes`.
FLAT_CONTACTS = ("email", "phone", "telegram")
#: Channels that a dead address blocks (the webhook needs no address of the member's).
BLOCKABLE = ("email", "telegram")


def coordinator_region(roles: Iterable[str] | None, region: str | None) -> str:
    """The region a member coordinates, "" for a member who is no coordinator.

    `roles` is an array: nx-27017 cannot find an array element through an index (equality
    with an array compares its JSON text), so this scalar copy is what the coordinators of a
    region are looked up by. Always present on an active member ("" when none), so that
    projections written before it existed are found and filled in at start-up.
    """
    return (region or "") if "coordinator" in (roles or ()) else ""


def interest_entries(
    member_id: str, interests: Iterable[str] | None, region: str | None
) -> list[Doc]:
    """One small document per interest of the member, with the region: what an activity's
    audience is found by. `interests` is an array, which nx-27017 cannot match by element
    through an index (see `coordinator_region`); (interest, region) is two scalars."""
    return [
        {
            "_id": f"{member_id}|{tag}",
            "member_id": member_id,
            "interest": tag,
            "region": region or "",
        }
        for tag in normalise_tags(interests or ())
    ]


@dataclass(frozen=True)
class InterestChange:
    """The member's interest entries to write (upserted by id) and those to remove (ids)."""

    write: list[Doc]
    remove: list[str]


def interests_changed(
    member_id: str, current: Mapping[str, Any], changes: Mapping[str, Any]
) -> InterestChange | None:
    """How member-updated changes the member's interest entries (None: it does not)."""
    if "interests" not in changes and "region" not in changes:
        return None
    before = interest_entries(member_id, current.get("interests"), current.get("region"))
    after = interest_entries(
        member_id,
        changes.get("interests", current.get("interests")),
        changes.get("region", current.get("region")),
    )
    kept = {e["_id"] for e in after}
    return InterestChange(after, [e["_id"] for e in before if e["_id"] not in kept])


def joined(data: MemberJoined) -> dict[str, Any]:
    """The fields member-joined sets (over a document level-changed may have made first)."""
    m = data.model_dump(mode="json")
    return {
        **{k: m[k] for k in PROJECTION_FIELDS},
        # Whole subdocuments: booleans stay booleans on nx-27017.
        "contacts": m["contacts"],
        "consent": m["consent"],
        "status": "active",
        "coordinator_region": coordinator_region(m["roles"], m["region"]),
    }


@dataclass(frozen=True)
class MemberChange:
    """What member-updated changes: fields to set, and paths to remove."""

    set: dict[str, Any]
    unset: dict[str, str] = field(default_factory=dict)


def updated(current: Mapping[str, Any], changes: Mapping[str, Any]) -> MemberChange:
    """The change member-updated makes to the stored member `current`.

    Contacts and consent are merged into what is stored (whole subdocuments are written, so
    booleans stay booleans on nx-27017). A new address for a channel lifts its block: a
    bounced mailbox or a blocked bot says nothing about the next address.
    """
    update: dict[str, Any] = {k: changes[k] for k in PROJECTION_FIELDS if k in changes}
    if "roles" in changes or "region" in changes:
        update["coordinator_region"] = coordinator_region(
            changes.get("roles", current.get("roles")),
            changes.get("region", current.get("region")),
        )
    before = dict(current.get("contacts") or {})
    contacts = {**before, **(changes.get("contacts") or {})}
    contacts.update({k: changes[k] for k in FLAT_CONTACTS if k in changes})
    update["contacts"] = contacts
    consent = {**(current.get("consent") or {}), **(changes.get("consent") or {})}
    if "marketing" in changes:
        consent["marketing"] = changes["marketing"]
    update["consent"] = {k: bool(v) for k, v in consent.items()}
    unblock = {f"blocked.{c}": "" for c in BLOCKABLE if contacts.get(c) != before.get(c)}
    return MemberChange(update, unblock)
