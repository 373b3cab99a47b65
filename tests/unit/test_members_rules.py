"""Members' pure rules: referral codes and referrals, profile changes, cursors, tombstones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.members import domain, listing
from services.members.contacts import canonical_email
from services.members.domain import Contacts, RuleViolation
from services.members.erasure import consumer_is_past, subject_matches
from services.members.store import erased_document
from shared import query
from shared.query import InvalidCursor
from shared.tags import normalise_tags

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
LOOK_ALIKES = set("0O1IL5S8B2ZUV")


def test_referral_codes_are_short_and_free_of_look_alike_characters() -> None:
    codes = {domain.new_referral_code() for _ in range(2000)}
    assert len(codes) == 2000  # 23^7 codes: collisions are rare (and retried on insert)
    for code in codes:
        assert len(code) == domain.CODE_LENGTH and not LOOK_ALIKES & set(code)
        assert domain.is_well_formed_code(code)


@given(st.text(domain.CODE_ALPHABET, min_size=7, max_size=7), st.data())
def test_referral_codes_are_case_insensitive_on_input(code: str, data: st.DataObject) -> None:
    typed = "".join(c.lower() if data.draw(st.booleans()) else c for c in code)
    assert domain.normalise_code(f" {typed[:3]}-{typed[3:]} ") == code


ANNA = Contacts(email="anna@example.org", phone="+79161234567", telegram="anna_s")


@pytest.mark.parametrize(
    "newcomer, kind",
    [
        (Contacts(email="anna@example.org"), "email"),
        (Contacts(email="other@example.org", phone="+79161234567"), "phone"),
        (Contacts(telegram="anna_s"), "telegram"),
    ],
)
def test_self_referral_by_each_contact_kind_is_refused(newcomer: Contacts, kind: str) -> None:
    with pytest.raises(RuleViolation) as info:
        domain.check_referral(newcomer, ANNA, referrer_active=True)
    # The answer does not say which contact matched.
    assert info.value.code == "self_referral" and kind not in info.value.message


@pytest.mark.parametrize(
    "owner, newcomer",
    [
        ("anna@example.org", "anna+1@example.org"),
        ("anna@example.org", "Anna+drive+2026@Example.ORG"),
        ("anna@gmail.com", "a.n.n.a@gmail.com"),
        ("a.n.n.a+old@googlemail.com", "anna@gmail.com"),
        ("anna.smith@gmail.com", "annasmith+x@googlemail.com"),
    ],
)
def test_self_referral_is_judged_on_the_mailbox_an_address_reaches(
    owner: str, newcomer: str
) -> None:
    with pytest.raises(RuleViolation) as info:
        domain.check_referral(Contacts(email=newcomer), Contacts(email=owner), True)
    assert info.value.code == "self_referral"


@pytest.mark.parametrize(
    "owner, newcomer",
    [
        ("anna@example.org", "anna1@example.org"),
        ("a.nna@example.org", "anna@example.org"),  # dots count outside Gmail
        ("anna@gmail.com", "anna@gmail.co"),
        ("anna@example.org", "anna@example.org.ru"),
    ],
)
def test_different_mailboxes_are_different_people(owner: str, newcomer: str) -> None:
    domain.check_referral(Contacts(email=newcomer), Contacts(email=owner), True)


def test_canonical_email_keeps_an_address_that_is_only_a_tag_or_dots() -> None:
    assert canonical_email("+tag@example.org") == "+tag@example.org"
    assert canonical_email("...@gmail.com") == "...@gmail.com"
    assert canonical_email("Telegram.Anna@GoogleMail.com") == "telegramanna@gmail.com"


def test_a_member_who_left_cannot_refer() -> None:
    with pytest.raises(RuleViolation) as info:
        domain.check_referral(Contacts(email="bob@example.org"), ANNA, referrer_active=False)
    assert info.value.code == "referrer_left"


def test_a_friend_with_other_contacts_may_use_the_code() -> None:
    domain.check_referral(Contacts(email="bob@example.org"), ANNA, referrer_active=True)


MEMBER = {
    "_id": "m1",
    "display_name": "Anna",
    "region": "moscow",
    "roles": ["volunteer"],
    "interests": ["ecology"],
    "skills": [],
    "locale": "ru",
    "timezone": "Europe/Moscow",
    "email": "anna@example.org",
    "phone": "+79161234567",
    "consent": {"terms": True, "marketing": False, "terms_at": NOW, "marketing_at": None},
}


def test_a_profile_change_lists_exactly_the_fields_that_change() -> None:
    change = domain.profile_change(
        MEMBER, {"region": "kazan", "locale": "ru", "interests": ["ecology"]}, NOW
    )
    assert change.changes == {"region": "kazan"}
    assert change.set_fields == {"region": "kazan"} and not change.unset_fields


def test_an_unchanged_profile_is_no_change() -> None:
    assert not domain.profile_change(
        MEMBER, {"display_name": "Anna", "email": "anna@example.org"}, NOW
    )


def test_contacts_change_as_a_whole_object_and_a_null_removes_one() -> None:
    change = domain.profile_change(MEMBER, {"phone": None, "telegram": "anna_s"}, NOW)
    assert change.changes == {
        "contacts": {"email": "anna@example.org", "phone": None, "telegram": "anna_s"}
    }
    assert change.set_fields == {"telegram": "anna_s"} and change.unset_fields == ["phone"]


def test_the_last_contact_cannot_be_removed() -> None:
    with pytest.raises(RuleViolation) as info:
        domain.profile_change(MEMBER, {"email": None, "phone": None}, NOW)
    assert info.value.code == "no_contact"


def test_marketing_consent_change_is_recorded_with_its_time_and_emitted() -> None:
    later = NOW + timedelta(days=3)
    change = domain.profile_change(MEMBER, {"consent": {"marketing": True}}, later)
    assert change.changes == {"consent": {"terms": True, "marketing": True}}
    stored = change.set_fields["consent"]
    assert stored["marketing"] is True and stored["marketing_at"] == later
    assert stored["terms_at"] == NOW  # the terms' time is untouched


def test_the_same_consent_again_is_no_change() -> None:
    assert not domain.profile_change(MEMBER, {"consent": {"marketing": False, "terms": True}}, NOW)


def test_consent_to_the_terms_cannot_be_withdrawn_by_patch() -> None:
    with pytest.raises(RuleViolation) as info:
        domain.profile_change(MEMBER, {"consent": {"terms": False}}, NOW)
    assert info.value.code == "terms_required"


def test_stored_zero_one_consent_reads_as_booleans() -> None:
    # nx-27017 may store a boolean set by path as 0/1.
    assert domain.public_consent({"terms": 1, "marketing": 0}) == {
        "terms": True,
        "marketing": False,
    }


def test_tags_are_trimmed_lower_case_and_unique_in_order() -> None:
    assert normalise_tags([" Ecology ", "first  aid", "ecology", ""]) == ["ecology", "first aid"]


@given(
    st.datetimes(datetime(2001, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC)),
    st.uuids().map(str),
)
def test_a_cursor_round_trips(joined_at: datetime, member_id: str) -> None:
    key = domain.list_key(joined_at, member_id)
    assert query.decode_cursor(query.encode_cursor(key), listing.LIST_KEY_RE) == key


@given(st.lists(st.tuples(st.integers(0, 10**12), st.uuids().map(str)), min_size=2))
def test_list_keys_sort_like_join_time_then_id(joins: list[tuple[int, str]]) -> None:
    keyed = [
        (domain.list_key(datetime.fromtimestamp(ms / 1000, UTC), mid), (ms, mid))
        for ms, mid in joins
    ]
    assert [k for _, k in sorted(keyed)] == sorted(k for _, k in keyed)


@pytest.mark.parametrize("bad", ["", "nope", "bm90IGpzb24", "MTIzOmFiYw"])
def test_a_foreign_cursor_is_refused(bad: str) -> None:
    with pytest.raises(InvalidCursor):
        query.decode_cursor(bad, listing.LIST_KEY_RE)


def test_the_tombstone_keeps_no_personal_data_and_the_events_without_any() -> None:
    member = {
        **MEMBER,
        "joined_at": NOW,
        "referred_by": "m0",
        "referral_code": "KQX7MAC",
        "version": 4,
        "idempotency_record": "/v1/members:k1",
        "outbox": {
            "e1": {"id": "e1", "type": "member-joined", "data": {"display_name": "Anna"}},
            "e2": {"id": "e2", "type": "referral-made", "data": {"referrer_id": "m0"}},
            "e3": {"id": "e3", "type": "member-updated", "data": {"changes": {}}},
        },
        "outbox_pending": 3,
    }
    left = {"id": "e4", "type": "member-left", "data": {"member_id": "m1", "erase": True}}
    tomb = erased_document(member, NOW, left)
    assert set(tomb) == {
        "_id", "joined_at", "list_key", "referred_by", "referral_code", "status", "departure",
        "version", "outbox", "outbox_pending", "purge",
    }  # fmt: skip
    assert tomb["status"] == "erased" and tomb["version"] == 5 and tomb["purge"] == "pending"
    assert set(tomb["outbox"]) == {"e2", "e4"} and tomb["outbox_pending"] == 2
    assert tomb["departure"] == {"left_at": NOW, "erased_at": NOW}


@pytest.mark.parametrize(
    "pattern, subject, matches",
    [
        (">", "members.member-left.m1", True),
        ("members.>", "members.member-left.m1", True),
        ("members.member-left.*", "members.member-left.m1", True),
        ("members.member-joined.*", "members.member-left.m1", False),
        ("members.*", "members.member-left.m1", False),
        ("members.*.m1", "members.member-left.m1", True),
        ("members.member-left.m1.>", "members.member-left.m1", False),
    ],
)
def test_nats_subject_matching(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


def _consumer(
    filters: list[str], ack_floor: int, pending: int, ack_pending: int
) -> SimpleNamespace:
    config = SimpleNamespace(
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
    )
    return SimpleNamespace(
        config=config,
        ack_floor=SimpleNamespace(stream_seq=ack_floor),
        num_pending=pending,
        num_ack_pending=ack_pending,
    )


def test_member_left_waits_for_a_consumer_that_has_not_acknowledged_it() -> None:
    subject = "members.member-left.m1"
    assert not consumer_is_past(_consumer(["members.>"], 9, 3, 0), subject, 10)
    assert not consumer_is_past(_consumer(["members.>"], 9, 0, 1), subject, 10)
    assert consumer_is_past(_consumer(["members.>"], 10, 5, 2), subject, 10)
    assert consumer_is_past(_consumer(["members.>"], 4, 0, 0), subject, 10)
    # A consumer that never takes member-left is not waited for.
    assert consumer_is_past(_consumer(["members.member-joined.*", "x.>"], 0, 7, 0), subject, 10)


@given(
    st.lists(st.sampled_from(listing.ROLES), min_size=1, unique=True),
    st.lists(st.sampled_from(["ecology", "animals", "a:b", "first aid"]), unique=True),
    st.sampled_from([None, *listing.ROLES]),
    st.sampled_from([None, "ecology", "a:b", "sport"]),
)
def test_a_member_is_under_a_listing_s_tags_exactly_when_they_match_its_filter(
    roles: list[str], interests: list[str], role: str | None, interest: str | None
) -> None:
    wanted = listing.tags_for_filter(role, interest)
    if role is None and interest is None:
        assert wanted == []  # listed from the member documents themselves
        return
    matches = (role is None or role in roles) and (interest is None or interest in interests)
    assert bool(set(wanted) & set(listing.list_tags(roles, interests))) == matches


def test_listing_entries_follow_status_and_region_and_end_with_erasure() -> None:
    member = {
        "_id": "m1",
        "status": "active",
        "region": "moscow",
        "roles": ["volunteer"],
        "interests": ["ecology"],
        "list_key": domain.list_key(NOW, "m1"),
    }
    entries = listing.tag_entries(member)
    assert sorted(e["tag"] for e in entries.values()) == [
        "role:volunteer",
        "role:volunteer|interest:ecology",
    ]
    assert listing.tag_entries(member) == entries  # deterministic: writing twice is harmless
    moved = {**member, "region": "kazan"}
    left = {**member, "status": "left"}
    assert not set(entries) & set(listing.tag_entries(moved))
    assert not set(entries) & set(listing.tag_entries(left))
    assert listing.tag_entries({**member, "status": "erased"}) == {}
    entry = next(iter(entries.values()))
    assert listing.entry_holds(entry, member)
    assert not listing.entry_holds(entry, moved) and not listing.entry_holds(entry, None)
