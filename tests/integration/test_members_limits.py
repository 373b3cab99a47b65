"""Bad input to the members API is a 4xx in the error shape, and nothing of it is stored.

The cases are those an outside review sent to a running stack (issue 12), plus the bounds of
every other field of a join, a change and an import row.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.members import importer
from shared.http import MAX_BODY_BYTES
from tests.integration.conftest import join_body

NDJSON = {"Content-Type": "application/x-ndjson"}


def _error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text[:500]
    error = r.json()["error"]
    assert error["code"] == code, error
    return error


async def _nobody_joined(http: Any) -> None:
    listed = (await http.get("/v1/members")).json()["items"]
    assert listed == []


@pytest.mark.parametrize(
    "body",
    [
        # Under the body limit, so the tag's own bound answers (50 characters a tag).
        join_body(interests=["x" * 25_000] * 40),
        join_body(skills=["x" * 51]),
        join_body(interests=[f"tag{i}" for i in range(51)]),
        join_body(roles=["volunteer"] * 9),
        join_body(display_name="Anna\x00"),
        join_body(display_name="Anna\rBcc: everyone@example.org"),
        join_body(display_name="Anna\vSmith"),
        join_body(display_name="Anna\x85Smith"),
        join_body(display_name="Anna\u2028Smith"),
        join_body(display_name="Anna\u202eSmith"),
        join_body(display_name="x" * 101),
        join_body(region="moscow\nkazan"),
        join_body(region="r" * 101),
        join_body(interests=["eco\nlogy"]),
        join_body(consent={"terms": "true", "marketing": False}),
        join_body(consent={"terms": 1, "marketing": False}),
        join_body(consent={"terms": True, "marketing": "false"}),
        join_body(consent={"terms": True, "marketing": False, "sms": True}),
        join_body(timezone="Europe/Moscow\x00"),
        join_body(referral_code="K" * 33),
        join_body(email="a" * 250 + "@example.org"),
    ],
    ids=[
        "40-interests-of-25000-characters",
        "a-skill-over-50-characters",
        "51-interests",
        "9-roles",
        "nul-in-display-name",
        "cr-in-display-name",
        "vt-in-display-name",
        "nel-in-display-name",
        "line-separator-in-display-name",
        "direction-override-in-display-name",
        "display-name-over-100",
        "line-break-in-region",
        "region-over-100",
        "line-break-in-an-interest",
        "consent-terms-as-the-string-true",
        "consent-terms-as-1",
        "consent-marketing-as-a-string",
        "unknown-consent-field",
        "nul-in-timezone",
        "referral-code-over-32",
        "email-over-254",
    ],
)
async def test_a_join_outside_the_bounds_is_422_and_stores_nothing(services, body):
    async with services("members") as s:
        http = s["members"].http
        r = await http.post("/v1/members", json=body)
        _error(r, 422, "invalid_request")
        assert len(r.content) < 4_000  # the message names the field, it does not echo it
        await _nobody_joined(http)


async def test_a_huge_timezone_is_a_short_422_that_does_not_echo_it(services):
    async with services("members") as s:
        http = s["members"].http
        # The largest that passes the body limit: the field's bound (64) answers, before
        # the zone database is asked.
        zone = "Europe/" + "x" * (MAX_BODY_BYTES - 2_000)
        r = await http.post("/v1/members", json=join_body(timezone=zone))
        error = _error(r, 422, "invalid_request")
        assert "timezone" in error["message"] and len(r.content) < 1_000
        assert "xxxxxxxxxx" not in r.text
        r = await http.post("/v1/members", json=join_body(timezone="x" * 65))
        assert "xxxxxxxxxx" not in _error(r, 422, "invalid_request")["message"]
        await _nobody_joined(http)


async def test_a_body_over_the_limit_is_413_even_with_50_interests_of_25000_characters(services):
    async with services("members") as s:
        http = s["members"].http
        review = join_body(interests=["x" * 25_000] * 50)  # 1.25 MB: the review's member
        _error(await http.post("/v1/members", json=review), 413, "too_large")
        ten_mb = json.dumps(join_body(display_name="x" * 10_000_000))
        r = await http.post(
            "/v1/members", content=ten_mb, headers={"Content-Type": "application/json"}
        )
        _error(r, 413, "too_large")
        await _nobody_joined(http)


async def test_an_idempotency_key_of_100_kb_is_422_and_not_stored(services):
    async with services("members") as s:
        http = s["members"].http
        r = await http.post(
            "/v1/members", json=join_body(), headers={"Idempotency-Key": "k" * 100_000}
        )
        _error(r, 422, "invalid_idempotency_key")
        await _nobody_joined(http)
        assert await s["members"].runtime.db["idempotency_keys"].count_documents({}) == 0


@pytest.mark.parametrize(
    "change",
    [
        {"display_name": "Anna\rSmith"},
        {"display_name": "Anna\u2028Smith"},
        {"display_name": ""},
        {"region": "r" * 101},
        {"interests": ["x" * 51]},
        {"skills": [f"s{i}" for i in range(51)]},
        {"roles": ["staff"] * 9},
        {"timezone": "x" * 100_000},
        {"consent": {"marketing": "true"}},
        {"consent": {"terms": "true"}},
        {"consent": {"marketing": 0}},
    ],
    ids=[
        "cr-in-display-name",
        "line-separator-in-display-name",
        "empty-display-name",
        "region-over-100",
        "an-interest-over-50",
        "51-skills",
        "9-roles",
        "timezone-of-100-kb",
        "consent-marketing-as-a-string",
        "consent-terms-as-a-string",
        "consent-marketing-as-0",
    ],
)
async def test_a_change_outside_the_bounds_is_422_and_changes_nothing(services, change):
    async with services("members") as s:
        http = s["members"].http
        member = (await http.post("/v1/members", json=join_body())).json()
        r = await http.patch(f"/v1/members/{member['member_id']}", json=change)
        _error(r, 422, "invalid_request")
        assert len(r.content) < 4_000
        assert (await http.get(f"/v1/members/{member['member_id']}")).json() == member


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/members", {"region": "r" * 101}),
        ("/v1/members", {"interest": "i" * 101}),
        ("/v1/members", {"cursor": "²:x"}),
        ("/v1/members", {"cursor": "9" * 30}),
        ("/v1/members", {"cursor": "9" * 5_000}),
        ("/v1/members", {"limit": "1e999"}),
        ("/v1/members/" + "m" * 101, {}),
        ("/v1/members/" + "m" * 101 + "/referrals", {}),
    ],
    ids=[
        "region-over-100",
        "interest-over-100",
        "cursor-not-ascii",
        "cursor-of-30-digits",
        "cursor-of-5000-digits",
        "limit-of-1e999",
        "member-id-over-100",
        "referrals-of-a-member-id-over-100",
    ],
)
async def test_odd_query_strings_and_ids_are_422(services, path, params):
    async with services("members") as s:
        r = await s["members"].http.get(path, params=params)
        assert r.status_code == 422, r.text[:500]
        assert r.json()["error"]["code"] in {"invalid_request", "invalid_cursor"}


def _row(**over: Any) -> dict[str, Any]:
    row = {
        "display_name": "Olga",
        "email": "olga@example.org",
        "region": "moscow",
        "joined_at": "2021-03-14T09:30:00+03:00",
        "consent_terms": True,
    }
    row.update(over)
    return row


async def test_import_rows_outside_the_bounds_are_rejected_one_by_one(services):
    async with services("members") as s:
        http = s["members"].http
        rows = [
            _row(email="ok@example.org", consent_terms="yes", consent_marketing="no"),
            _row(email="y0@example.org", joined_at="0001-01-01T00:00:00+14:00"),
            _row(email="y9@example.org", joined_at="9999-12-31T23:59:59-14:00"),
            _row(email="old@example.org", joined_at="1999-12-31"),
            _row(email="c0@example.org", consent_at="0001-01-01T00:00:00+14:00"),
            _row(email="nul@example.org", display_name="Olga\x00"),
            _row(email="nel@example.org", display_name="Olga\x85K"),
            _row(email="src@example.org", consent_source="paper\nform"),
            _row(email="src2@example.org", consent_source="p" * 201),
            _row(email="tz@example.org", timezone="x" * 100_000),
            _row(email="tags@example.org", interests=["x" * 25_000] * 50),
        ]
        body = "\n".join(json.dumps(r) for r in rows) + "\n" + "[" * 100_000 + "\n"
        r = await http.post("/v1/members/import", content=body.encode(), headers=NDJSON)
        assert r.status_code == 200, r.text[:500]
        report = r.json()
        assert report["created"] == 1
        why = {x["row"]: x for x in report["rejected_rows"]}
        assert sorted(why) == list(range(2, 13))
        assert all(x["code"] == "invalid_request" for x in why.values())
        assert "joined_at" in why[2]["message"] and "2000" in why[2]["message"]
        assert "future" in why[3]["message"]
        assert "2000" in why[4]["message"]
        assert "consent_at" in why[5]["message"]
        assert "JSON" in why[12]["message"]
        assert len(r.content) < 10_000  # nothing huge is echoed back
        listed = (await http.get("/v1/members")).json()["items"]
        assert [m["contacts"]["email"] for m in listed] == ["ok@example.org"]
        assert listed[0]["consent"]["terms"] is True and listed[0]["consent"]["marketing"] is False


async def test_an_import_the_csv_reader_cannot_read_is_422_before_any_row(services):
    async with services("members") as s:
        http = s["members"].http
        body = (
            "display_name,email,region,joined_at,consent_terms\n"
            "Olga,olga@example.org,moscow,2021-03-14,yes\n"
            f"{'x' * 200_000},big@example.org,moscow,2021-03-14,yes\n"
        )
        r = await http.post(
            "/v1/members/import", content=body.encode(), headers={"Content-Type": "text/csv"}
        )
        _error(r, 422, "invalid_import")
        await _nobody_joined(http)


async def test_an_import_row_number_beyond_any_file_is_422(services):
    async with services("members") as s:
        r = await s["members"].http.post(
            "/v1/members/import",
            params={"first_row": str(10**30)},
            content=json.dumps(_row()).encode(),
            headers=NDJSON,
        )
        _error(r, 422, "invalid_request")


async def test_an_import_over_its_own_limit_is_413_and_under_it_passes_the_body_limit(services):
    async with services("members") as s:
        http = s["members"].http
        over = b" " * (importer.MAX_BYTES + 1)
        _error(
            await http.post("/v1/members/import", content=over, headers=NDJSON), 413, "too_large"
        )
        # Bigger than other routes take, smaller than the import's limit: read and imported.
        padding = "\n" * (MAX_BODY_BYTES + 10)
        body = (json.dumps(_row()) + padding).encode()
        r = await http.post("/v1/members/import", content=body, headers=NDJSON)
        assert r.status_code == 200 and r.json()["created"] == 1, r.text[:500]
