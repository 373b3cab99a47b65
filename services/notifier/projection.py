"""What member events change in the notifier's member projection (pure: no I/O).

The projection keeps the fields a message needs (name, region, roles, locale, time zone,
contacts, consent) and some of its own: `coordinator_region`, the scalar a region's
coordinators are found by, and `blocked`, the channels known to fail for good. The store writes
what these functions return; the rules about what changes live here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.events import MemberJoined

#: Copied as they are from member-joined and member-updated.
PROJECTION_FIELDS = ("display_name", "region", "roles", "locale", "timezone")
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

    def update(self) -> dict[str, Any]:
        body: dict[str, Any] = {"$set": self.set}
        if self.unset:
            body["$unset"] = self.unset
        return body


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
