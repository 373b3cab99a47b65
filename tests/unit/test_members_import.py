"""Import rows read and validated as joins are (no I/O): columns, separators, messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.members import importer
from services.members.importer import ImportRefused, RowRejected

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
HEADER = "display_name,email,region,joined_at,consent_terms"


def _candidate(**raw: object) -> importer.Candidate:
    row = {
        "display_name": "Vera",
        "email": "Vera@Example.org",
        "region": "moscow",
        "joined_at": "2021-03-14T09:30:00+03:00",
        "consent_terms": "yes",
        **raw,
    }
    return importer.candidate(7, row, phone_region="RU", file_id="f", welcome=False, now=NOW)


def test_csv_rows_are_numbered_from_the_first_data_row_and_skip_empty_lines() -> None:
    text = "\n".join(
        [
            HEADER,
            "A,a@example.org,moscow,2020-01-01,1",
            "",
            " , , , , ",
            "B,b@x.org,kazan,2020-01-02,1",
        ]
    )
    rows = list(importer.rows_of(text, importer.CSV, first_row=11))
    assert [(n, r["display_name"]) for n, r in rows] == [(11, "A"), (12, "B")]
    assert importer.count_rows(text, importer.CSV) == 2


def test_a_semicolon_separated_spreadsheet_is_read_with_its_own_separator() -> None:
    text = (
        "display_name;email;region;roles;joined_at;consent_terms\n"
        "A;a@x.org;moscow;volunteer|staff;2020-01-01;1\n"
    )
    ((_, row),) = importer.rows_of(text, importer.CSV, first_row=1)
    assert row["roles"] == "volunteer|staff"
    assert importer.join_fields(row)["roles"] == ["volunteer", "staff"]


def test_a_row_with_more_values_than_columns_is_rejected_alone() -> None:
    text = (
        f"{HEADER}\nA,a@example.org,moscow,2020-01-01,1,extra\nB,b@example.org,kazan,2020-01-02,1\n"
    )
    (first, rejected), (second, row) = importer.rows_of(text, importer.CSV, first_row=1)
    assert isinstance(rejected, RowRejected) and (first, second) == (1, 2)
    assert row["display_name"] == "B"


@pytest.mark.parametrize(
    "header, why",
    [
        ("", "no header row"),
        ("display_name,emial,region,joined_at,consent_terms", "unknown column(s) 'emial'"),
        ("display_name,email,email,region,joined_at,consent_terms", "named twice: email"),
        ("display_name,email,region,consent_terms", "missing column(s): joined_at"),
        ("display_name,region,joined_at,consent_terms", "email, phone or telegram"),
    ],
)
def test_a_header_that_cannot_be_imported_refuses_the_whole_file(header: str, why: str) -> None:
    with pytest.raises(ImportRefused) as refused:
        list(importer.rows_of(header + "\n", importer.CSV, first_row=1))
    assert refused.value.status == 422 and why in refused.value.message


def test_json_lines_are_numbered_by_line_and_bad_lines_are_rejected_alone() -> None:
    text = '{"display_name": "A"}\n\nnot json\n[1]\n{"display_name": "B", "referral_code": "X"}\n'
    rows = list(importer.rows_of(text, importer.JSONL, first_row=1))
    assert [n for n, _ in rows] == [1, 3, 4, 5]
    assert rows[0][1] == {"display_name": "A"}
    assert [r.code for _, r in rows[1:]] == ["invalid_request"] * 3  # type: ignore[union-attr]
    assert "referral_code" in rows[3][1].message  # type: ignore[union-attr]


def test_empty_cells_are_values_not_given_and_consent_columns_become_the_join_s_consent() -> None:
    fields = importer.join_fields(
        {"display_name": "A", "phone": "", "consent_terms": "yes", "consent_marketing": "no"}
    )
    assert fields == {"display_name": "A", "consent": {"terms": "yes", "marketing": "no"}}


def test_a_valid_row_becomes_a_member_with_its_original_date_and_recorded_consent() -> None:
    made = _candidate(consent_marketing="true", consent_source="paper form")
    member = made.member
    assert member["joined_at"] == datetime(2021, 3, 14, 6, 30, tzinfo=UTC)
    assert member["list_key"].startswith(f"{int(member['joined_at'].timestamp() * 1000):013d}:")
    assert member["email"] == "vera@example.org" and made.contacts == [
        ("email", "vera@example.org")
    ]
    assert member["consent"] == {
        "terms": True,
        "marketing": True,
        "terms_at": member["joined_at"],
        "marketing_at": member["joined_at"],
        "source": "paper form",
    }
    assert member["imported"] == {"file": "f", "row": 7} and member["referral_code"]
    (event,) = member["outbox"].values()
    assert event["data"]["imported"] is True and event["data"]["welcome"] is False
    assert member["outbox_pending"] == 1
    assert {e["tag"] for e in made.entries} == {"role:volunteer"}


@pytest.mark.parametrize(
    "raw, code, words",
    [
        ({"consent_terms": "no"}, "invalid_request", "consent_terms: Value error, joining needs"),
        ({"consent_terms": None}, "invalid_request", "consent_terms: Field required"),
        ({"email": None}, "invalid_request", "row: Value error, give at least one contact"),
        ({"joined_at": None}, "invalid_request", "joined_at: Field required"),
        ({"joined_at": "2999-01-01"}, "invalid_request", "joined_at: Value error, must not be"),
        ({"consent_at": "1969-12-31"}, "invalid_request", "consent_at: Value error, must be in"),
        ({"roles": "volunteer;king"}, "invalid_request", "roles: Input should be"),
        ({"email": "nope"}, "invalid_email", "email 'nope' is not valid"),
        ({"phone": "+7 12"}, "invalid_phone", "phone '+7 12'"),
    ],
)
def test_a_row_is_refused_with_the_code_and_message_a_join_would_give(
    raw: dict[str, object], code: str, words: str
) -> None:
    with pytest.raises(RowRejected) as rejected:
        _candidate(**raw)
    assert rejected.value.code == code and words in rejected.value.message


@pytest.mark.parametrize(
    "content_type, kind",
    [
        ("text/csv; charset=utf-8", "csv"),
        ("application/x-ndjson", "jsonl"),
        ("application/jsonl", "jsonl"),
    ],
)
def test_csv_and_json_lines_are_recognised_by_content_type(content_type: str, kind: str) -> None:
    assert importer.media_kind(content_type) == kind


def test_other_content_types_and_non_utf8_bodies_are_refused() -> None:
    with pytest.raises(ImportRefused) as refused:
        importer.media_kind("application/json")
    assert refused.value.status == 415
    with pytest.raises(ImportRefused):
        importer.decode("Вера".encode("cp1251"))
