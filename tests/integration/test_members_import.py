"""Importing an existing volunteer base (CSV, JSON lines) against real NATS and MongoDB."""

from __future__ import annotations

import json
from typing import Any

from services.members import importer
from tests.helpers import wait_until
from tests.integration.conftest import join_body

HEADER = (
    "display_name,email,phone,telegram,region,roles,interests,skills,locale,timezone,"
    "joined_at,consent_terms,consent_marketing,consent_at,consent_source"
)
CSV_TYPE = {"Content-Type": "text/csv"}
JSONL_TYPE = {"Content-Type": "application/x-ndjson"}


def _csv(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def _cells(**fields: str) -> str:
    """One CSV row with the given columns filled and the others empty."""
    return ",".join(fields.get(name, "") for name in HEADER.split(","))


def _jsonl(*rows: dict[str, Any]) -> str:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"


def _row(**over: Any) -> dict[str, Any]:
    row = {
        "display_name": "Vera",
        "email": "vera@example.org",
        "region": "moscow",
        "roles": ["volunteer"],
        "interests": ["ecology"],
        "joined_at": "2021-03-14T09:30:00+03:00",
        "consent_terms": True,
        "consent_marketing": False,
    }
    row.update(over)
    return row


async def _import(http: Any, body: str, headers: dict[str, str], **params: Any) -> dict:
    r = await http.post("/v1/members/import", content=body.encode(), headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def _listed(http: Any, **params: Any) -> list[str]:
    r = await http.get("/v1/members", params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    return [m["display_name"] for m in r.json()["items"]]


async def test_a_csv_import_keeps_the_original_join_date_and_the_consent_as_recorded(services):
    async with services("members") as s:
        http = s["members"].http
        today = (await http.post("/v1/members", json=join_body(display_name="Today"))).json()
        report = await _import(
            http,
            _csv(
                "Olga,Olga@Example.org,8 916 123-45-67,,moscow,volunteer;coordinator,"
                "Ecology|animals,driving,ru,Europe/Moscow,2019-05-01T10:00:00Z,yes,yes,"
                "2019-04-30T12:00:00Z,paper form 2019",
                "Pavel,,,@pavel_k,kazan,,,,en,Europe/Samara,2020-01-15,true,false,,",
            ),
            CSV_TYPE,
        )
        assert (report["rows"], report["created"], report["existing"]) == (2, 2, 0)
        assert report["rejected"] == 0 and report["rejected_rows"] == []
        assert report["welcome"] is False

        # Join order is the original one: the imported members come before today's joiner.
        assert await _listed(http) == ["Olga", "Pavel", "Today"]
        assert await _listed(http, role="coordinator") == ["Olga"]
        assert await _listed(http, interest="animals") == ["Olga"]
        assert await _listed(http, role="volunteer", region="kazan") == ["Pavel"]
        olga_id = (await http.get("/v1/members", params={"role": "coordinator"})).json()["items"][
            0
        ]["member_id"]
        olga = (await http.get(f"/v1/members/{olga_id}")).json()
        assert olga["joined_at"].startswith("2019-05-01T10:00:00")
        assert olga["contacts"] == {
            "email": "olga@example.org",
            "phone": "+79161234567",
            "telegram": None,
        }
        assert (olga["roles"], olga["interests"]) == (
            ["volunteer", "coordinator"],
            ["ecology", "animals"],
        )
        assert olga["consent"]["terms"] is True and olga["consent"]["marketing"] is True
        assert olga["consent"]["terms_at"].startswith("2019-04-30T12:00:00")
        assert olga["consent"]["marketing_at"].startswith("2019-04-30T12:00:00")
        assert olga["consent"]["source"] == "paper form 2019"
        assert olga["referral_code"] and olga["referral_code"] != today["referral_code"]
        assert olga["referred_by"] is None
        pavel = (await http.get("/v1/members", params={"region": "kazan"})).json()["items"][0]
        # Consent recorded without its own date: the join date stands for it.
        assert pavel["consent"]["terms_at"].startswith("2020-01-15T00:00:00")
        assert pavel["consent"]["marketing"] is False and pavel["consent"]["marketing_at"] is None
        assert (pavel["locale"], pavel["timezone"], pavel["roles"]) == (
            "en",
            "Europe/Samara",
            ["volunteer"],
        )


async def test_rejected_rows_are_reported_with_the_code_and_message_a_join_gives(services):
    async with services("members") as s:
        http = s["members"].http
        joined = join_body(email="member@example.org")
        assert (await http.post("/v1/members", json=joined)).status_code == 201
        refused_join = await http.post("/v1/members", json=join_body(email="not-an-email"))
        rows = [
            _row(email="first@example.org"),
            _row(email="not-an-email"),
            _row(email="second@example.org", consent_terms=False),
            _row(email=None),
            _row(email="third@example.org", roles=["king"]),
            _row(email="fourth@example.org", joined_at="2999-01-01T00:00:00Z"),
            _row(email="FIRST@example.org", phone="+7 916 000 00 01"),
            _row(email="member@example.org"),
            _row(email="fifth@example.org", referral_code="KQX7MAC"),
            _row(email="sixth@example.org", timezone="Mars/Olympus"),
        ]
        report = await _import(http, _jsonl(*rows), JSONL_TYPE)
        assert (report["rows"], report["created"], report["existing"]) == (10, 1, 1)
        why = {r["row"]: (r["code"], r["message"]) for r in report["rejected_rows"]}
        assert sorted(why) == [2, 3, 4, 5, 6, 7, 9, 10] and report["rejected"] == 8
        assert why[2] == ("invalid_email", refused_join.json()["error"]["message"])
        assert why[3][0] == "invalid_request"
        assert "joining needs consent to the terms" in why[3][1] and "consent_terms" in why[3][1]
        assert "at least one contact" in why[4][1]
        assert why[5][0] == "invalid_request" and why[5][1].startswith("roles")
        assert "joined_at" in why[6][1] and "future" in why[6][1]
        assert why[7] == ("duplicate_row", "same email as row 1")
        assert why[9] == ("invalid_request", "unknown field(s): referral_code")
        assert "time zone" in why[10][1]
        chunk = report["chunks"][0]
        assert (chunk["first_row"], chunk["last_row"], chunk["created"]) == (1, 10, 1)


async def test_importing_the_same_file_twice_creates_nobody_twice(services):
    async with services("members") as s:
        http = s["members"].http
        body = _jsonl(
            _row(display_name="A", email="a@example.org"),
            _row(display_name="B", email="b@example.org", telegram="b_member"),
            _row(display_name="B again", email="b2@example.org", telegram="@B_Member"),
            _row(display_name="C", email=None, phone="+7 903 111 22 33"),
        )
        first = await _import(http, body, JSONL_TYPE)
        assert (first["created"], first["existing"], first["rejected"]) == (3, 0, 1)
        second = await _import(http, body, JSONL_TYPE)
        assert (second["created"], second["existing"]) == (0, 3)
        assert second["rejected_rows"] == first["rejected_rows"]
        # Another file naming the same people by one of their contacts creates nobody either.
        other = await _import(
            http,
            _csv(
                _cells(
                    display_name="C2",
                    phone="89031112233",
                    region="moscow",
                    joined_at="2022-02-02",
                    consent_terms="1",
                )
            ),
            CSV_TYPE,
        )
        assert (other["created"], other["existing"], other["rejected"]) == (0, 1, 0)
        assert sorted(await _listed(http)) == ["A", "B", "C"]


async def test_a_file_sent_in_parts_rejects_a_person_repeated_in_a_later_part(services):
    async with services("members") as s:
        http = s["members"].http
        part_one = _jsonl(
            _row(display_name="A", email="a@example.org"), _row(email="b@example.org")
        )
        part_two = _jsonl(_row(display_name="A twice", email="A@example.org"))
        same_file = {"file": "volunteers-2024", "first_row": 1}
        one = await _import(http, part_one, JSONL_TYPE, **same_file)
        two = await _import(http, part_two, JSONL_TYPE, file="volunteers-2024", first_row=3)
        assert one["created"] == 2
        assert two["rejected_rows"] == [
            {"row": 3, "code": "duplicate_row", "message": "same email as row 1"}
        ]
        again = await _import(http, part_one, JSONL_TYPE, **same_file)
        assert (again["created"], again["existing"], again["rejected"]) == (0, 2, 0)


async def test_imported_members_are_announced_as_imported_and_welcomed_only_when_asked(
    services, nc
):
    joined: list[dict[str, Any]] = []

    async def on(msg: Any) -> None:
        joined.append(json.loads(msg.data))

    sub = await nc.subscribe("members.member-joined.*", cb=on)
    async with services("members") as s:
        http = s["members"].http
        await _import(http, _jsonl(_row(email="quiet@example.org")), JSONL_TYPE)
        await _import(http, _jsonl(_row(email="welcomed@example.org")), JSONL_TYPE, welcome="true")
        await wait_until(lambda: len(joined) == 2, message="member-joined not published")
        by_email = {e["data"]["contacts"]["email"]: e["data"] for e in joined}
        quiet, welcomed = by_email["quiet@example.org"], by_email["welcomed@example.org"]
        assert quiet["imported"] is True and quiet["welcome"] is False
        assert welcomed["imported"] is True and welcomed["welcome"] is True
        assert quiet["joined_at"].startswith("2021-03-14T06:30:00")
        assert quiet["consent"] == {"terms": True, "marketing": False}
        assert quiet["referred_by"] is None

        async def published() -> bool:
            pending = await s["members"].store.members.count_documents(
                {"outbox_pending": {"$gt": 0}}
            )
            return pending == 0

        await wait_until(published, message="outbox entries left after the import")

        # A member who joins is still welcomed, and not imported.
        member_id = (await http.post("/v1/members", json=join_body())).json()["member_id"]

        def announced() -> list[dict[str, Any]]:
            return [e["data"] for e in joined if e["data"]["member_id"] == member_id]

        normal = (await wait_until(announced, message="no member-joined for the join"))[0]
        assert normal["imported"] is False and normal["welcome"] is True
    await sub.unsubscribe()


async def test_a_body_that_cannot_be_imported_is_refused_before_anything_is_written(
    services, monkeypatch
):
    async with services("members") as s:
        http = s["members"].http

        async def refused(body: str, headers: dict[str, str]) -> tuple[int, str]:
            r = await http.post("/v1/members/import", content=body.encode(), headers=headers)
            return r.status_code, r.json()["error"]["code"]

        good = _csv("Ann,ann@example.org,,,moscow,,,,,,2020-01-01,1,0,,")
        assert await refused(good, {"Content-Type": "application/pdf"}) == (
            415,
            "unsupported_media_type",
        )
        assert await refused("name,email\nAnn,a@example.org\n", CSV_TYPE) == (422, "invalid_import")
        assert await refused("display_name,region,joined_at,consent_terms\n", CSV_TYPE) == (
            422,
            "invalid_import",
        )
        monkeypatch.setattr(importer, "MAX_ROWS", 2)
        three = _csv(*[f"P{i},p{i}@example.org,,,moscow,,,,,,2020-01-01,1,0,," for i in range(3)])
        assert await refused(three, CSV_TYPE) == (413, "too_many_rows")
        monkeypatch.setattr(importer, "MAX_BYTES", 100)
        assert await refused(good + good, CSV_TYPE) == (413, "too_large")
        assert await _listed(http) == []
