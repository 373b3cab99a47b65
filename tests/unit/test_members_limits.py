"""The bounds of the members' request models, without a server."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.members.schemas import ImportRow, JoinRequest

BASE: dict[str, Any] = {"display_name": "Anna", "email": "anna@example.org", "region": "moscow"}


@pytest.mark.parametrize("word", ["yes", "true", "1", True])
def test_an_imports_consent_words_are_read_as_booleans(word):
    row = ImportRow.model_validate(
        {**BASE, "joined_at": "2019-05-01", "consent": {"terms": word, "marketing": "no"}}
    )
    assert row.consent.terms is True and row.consent.marketing is False


@pytest.mark.parametrize("word", ["yes", "true", "1", 1])
def test_a_joins_consent_must_be_a_json_boolean(word):
    with pytest.raises(ValidationError, match="valid boolean"):
        JoinRequest.model_validate({**BASE, "consent": {"terms": word}})


@pytest.mark.parametrize(
    ("moment", "why"),
    [
        ("0001-01-01T00:00:00+14:00", "2000 or later"),
        ("9999-12-31T23:59:59-14:00", "future"),
        ("1999-12-31T23:59:59Z", "2000 or later"),
        ("2100-01-02", "future"),
    ],
)
def test_import_dates_outside_the_window_are_refused_without_overflow(moment, why):
    for name in ("joined_at", "consent_at"):
        body = {**BASE, "consent": {"terms": True}, "joined_at": "2019-05-01", name: moment}
        with pytest.raises(ValidationError, match=why):
            ImportRow.model_validate(body)


def test_the_timezone_bound_is_checked_before_the_zone_database():
    with pytest.raises(ValidationError) as caught:
        JoinRequest.model_validate({**BASE, "consent": {"terms": True}, "timezone": "x" * 10**6})
    assert [e["type"] for e in caught.value.errors()] == ["string_too_long"]
