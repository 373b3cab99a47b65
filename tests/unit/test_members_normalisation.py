"""Contacts normalise so that one person is one member: emails, phones, telegram handles."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.members.contacts import (
    RuleViolation,
    normalise_email,
    normalise_phone,
    normalise_telegram,
)
from tests.properties import examples

LOCAL = st.from_regex(r"[a-z0-9]([a-z0-9_+-]|\.(?=[a-z0-9])){0,15}[a-z0-9]?", fullmatch=True)
LABEL = st.from_regex(r"[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,10}", fullmatch=True)
TLD = st.sampled_from(["org", "com", "ru", "net", "io"])


@st.composite
def emails(draw: st.DrawFn) -> str:
    return f"{draw(LOCAL)}@{draw(LABEL)}.{draw(TLD)}"


@st.composite
def case_and_space_variant(draw: st.DrawFn, text: str) -> str:
    """The same address as a person might type it: random case, stray spaces anywhere."""
    out = []
    for ch in text:
        if draw(st.booleans()):
            ch = ch.upper()
        out.append(draw(st.sampled_from(["", "", "", " ", "\t"])) + ch)
    return draw(st.sampled_from(["", " ", "  "])) + "".join(out) + draw(st.sampled_from(["", " "]))


@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_email_case_and_space_variants_normalise_to_the_same_address(data: st.DataObject) -> None:
    email = data.draw(emails())
    variant = data.draw(case_and_space_variant(email))
    assert normalise_email(variant) == normalise_email(email) == email


@settings(max_examples=examples(200), deadline=None)
@given(emails(), emails())
def test_distinct_emails_stay_distinct(a: str, b: str) -> None:
    assume(a != b)
    assert normalise_email(a) != normalise_email(b)


@pytest.mark.parametrize(
    "bad", ["anna", "anna@", "@example.org", "anna@@example.org", "a..b@x.org"]
)
def test_an_invalid_email_is_refused_with_a_clear_code(bad: str) -> None:
    with pytest.raises(RuleViolation) as info:
        normalise_email(bad)
    assert info.value.code == "invalid_email"


REGIONS = ["RU", "DE", "GB", "US", "FR", "KZ", "BY", "IN", "BR", "IL"]


@st.composite
def phone_numbers(draw: st.DrawFn) -> phonenumbers.PhoneNumber:
    """A valid mobile number: a region's example number with its last digits redrawn."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    national = str(example.national_number)
    tail = draw(st.text("0123456789", min_size=4, max_size=4))
    number = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{tail}")
    assume(phonenumbers.is_valid_number(number))
    return number


SEPARATORS = st.sampled_from(["", " ", "-", " ", ".", "  "])


@st.composite
def written_as(draw: st.DrawFn, number: phonenumbers.PhoneNumber) -> str:
    """One number the way people write it: formats, 00 for +, separators, national (RU)."""
    fmt = phonenumbers.PhoneNumberFormat
    e164 = phonenumbers.format_number(number, fmt.E164)
    choices = [
        e164,
        phonenumbers.format_number(number, fmt.INTERNATIONAL),
        phonenumbers.format_number(number, fmt.RFC3966),
        "00" + e164[1:],
        "+" + "".join(draw(SEPARATORS) + d for d in e164[1:]),
    ]
    if phonenumbers.region_code_for_number(number) == "RU":
        choices.append(phonenumbers.format_number(number, fmt.NATIONAL))  # 8 (916) 123-45-67
    text = draw(st.sampled_from(choices))
    return draw(st.sampled_from(["", " "])) + text + draw(st.sampled_from(["", " "]))


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_phone_formats_of_the_same_number_normalise_to_one_e164(data: st.DataObject) -> None:
    number = data.draw(phone_numbers())
    a, b = data.draw(written_as(number)), data.draw(written_as(number))
    expected = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    assert normalise_phone(a) == normalise_phone(b) == expected


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_distinct_phone_numbers_do_not_collide(data: st.DataObject) -> None:
    first, second = data.draw(phone_numbers()), data.draw(phone_numbers())
    assume(first != second)
    a, b = data.draw(written_as(first)), data.draw(written_as(second))
    assert normalise_phone(a) != normalise_phone(b)


def test_a_russian_trunk_prefix_reads_as_plus_seven() -> None:
    assert normalise_phone("8 (916) 123-45-67") == "+79161234567"
    assert normalise_phone("+7 916 123 45 67") == "+79161234567"


def test_without_a_default_region_only_international_numbers_are_accepted() -> None:
    assert normalise_phone("+49 1512 3456789", None) == "+4915123456789"
    with pytest.raises(RuleViolation):
        normalise_phone("8 916 123 45 67", None)


@pytest.mark.parametrize("bad", ["12", "+7 916", "not a phone", "+1 555 0100 ext. 12", "+999 1234"])
def test_an_invalid_phone_is_refused(bad: str) -> None:
    with pytest.raises(RuleViolation) as info:
        normalise_phone(bad)
    assert info.value.code == "invalid_phone"


@pytest.mark.parametrize(
    "given_as",
    ["@Anna_Smith", "anna_smith", "https://t.me/anna_smith", "t.me/Anna_Smith/", " @ANNA_SMITH "],
)
def test_telegram_handles_normalise_without_at_link_or_case(given_as: str) -> None:
    assert normalise_telegram(given_as) == "anna_smith"


@pytest.mark.parametrize("bad", ["ann", "1anna", "anna__smith", "anna_", "анна_смит", "a" * 33])
def test_an_invalid_telegram_handle_is_refused(bad: str) -> None:
    with pytest.raises(RuleViolation) as info:
        normalise_telegram(bad)
    assert info.value.code == "invalid_telegram"
