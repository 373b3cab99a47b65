"""Which roles a change grants (and so needs a key with `admin`)."""

from __future__ import annotations

from services.members.domain import granted_roles


def test_coordinator_and_staff_are_granted_volunteer_and_partner_are_not():
    assert granted_roles(["volunteer", "partner"]) == []
    assert granted_roles(["staff", "volunteer", "coordinator"]) == ["coordinator", "staff"]


def test_keeping_a_role_the_member_holds_is_not_granting_it():
    assert granted_roles(["coordinator", "partner"], already=["coordinator"]) == []
    assert granted_roles(["coordinator", "staff"], already=["coordinator"]) == ["staff"]
    assert granted_roles(["volunteer"], already=["staff"]) == []
