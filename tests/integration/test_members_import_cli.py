"""`sarafan members import FILE` against the members service running in-process."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx

from sarafan.embedded import free_port
from services.members.cli import import_file
from tests.helpers import wait_until
from tests.integration.conftest import TOKEN

ENV = {"SARAFAN_API_TOKEN": TOKEN}
HEADER = "display_name;email;region;roles;interests;joined_at;consent_terms;consent_marketing"


async def _run(app: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await import_file(
        [*argv, "--url", "http://service"],
        ENV,
        out,
        err,
        transport=httpx.ASGITransport(app=app),
    )
    return code, out.getvalue(), err.getvalue()


async def _names(http: Any) -> list[str]:
    page = (await http.get("/v1/members", params={"limit": 200})).json()
    return [m["display_name"] for m in page["items"]]


async def test_the_cli_imports_a_file_in_parts_and_reports_rejected_rows_in_a_file(
    services, tmp_path: Path
):
    # A spreadsheet saved with `;` between cells (so several roles are written with `|`).
    rows = [
        "Anna;anna@example.org;moscow;volunteer|coordinator;ecology;2020-01-01;да-нет;no",
        "Boris;boris@example.org;moscow;volunteer;ecology;2020-02-01;yes;no",
        "Clara;not-an-email;kazan;volunteer;;2020-03-01;yes;yes",
        "",
        "Dmitri;dmitri@example.org;kazan;partner;sport;2020-04-01;yes;yes",
        "Boris again;BORIS@example.org;kazan;volunteer;;2020-05-01;yes;no",
    ]
    source = tmp_path / "volunteers.csv"
    source.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    async with services("members") as s:
        app, http = s["members"].app, s["members"].http
        code, out, err = await _run(app, str(source), "--chunk", "2")
        assert code == 1, (out, err)
        assert "5 rows: 2 created, 0 existing, 3 rejected" in out
        assert err.strip().splitlines()[-1].startswith("[" + "#" * 30 + "] 5/5 rows")
        assert await _names(http) == ["Boris", "Dmitri"]

        with (tmp_path / "volunteers.csv.rejected.csv").open(encoding="utf-8") as file:
            report = list(csv.DictReader(file))
        assert [(r["row"], r["code"], r["display_name"]) for r in report] == [
            ("1", "invalid_request", "Anna"),
            ("3", "invalid_email", "Clara"),
            # In another request than row 2, still the same file: a repeat, not "existing".
            ("5", "duplicate_row", "Boris again"),
        ]
        assert "consent_terms" in report[0]["message"]
        assert report[2]["message"] == "same email as row 2"

        # Fixed and imported again: only the fixed rows are new; the rest is not doubled.
        source.write_text(
            "\n".join([HEADER, rows[0].replace("да-нет", "yes"), rows[1], rows[4]]) + "\n",
            encoding="utf-8",
        )
        code, out, _ = await _run(app, str(source))
        assert code == 0 and "3 rows: 1 created, 2 existing, 0 rejected" in out
        assert await _names(http) == ["Anna", "Boris", "Dmitri"]


async def test_the_cli_sends_json_lines_and_asks_for_welcomes_only_with_the_flag(
    services, nc, tmp_path: Path
):
    announced: list[dict[str, Any]] = []

    async def on(msg: Any) -> None:
        announced.append(json.loads(msg.data)["data"])

    sub = await nc.subscribe("members.member-joined.*", cb=on)
    source = tmp_path / "base.jsonl"
    row = {
        "display_name": "Eva",
        "telegram": "@eva_helps",
        "region": "omsk",
        "joined_at": "2018-06-01T08:00:00Z",
        "consent_terms": True,
        "consent_source": "old CRM",
    }
    source.write_text(json.dumps(row) + "\n", encoding="utf-8")
    async with services("members") as s:
        code, out, _ = await _run(s["members"].app, str(source), "--welcome")
        assert code == 0 and "1 created" in out
        await wait_until(lambda: announced, message="no member-joined")
        assert announced[0]["imported"] is True and announced[0]["welcome"] is True
    await sub.unsubscribe()


async def test_the_cli_exits_2_on_a_usage_or_connection_error(tmp_path: Path):
    out, err = io.StringIO(), io.StringIO()
    assert await import_file([str(tmp_path / "missing.csv")], ENV, out, err) == 2
    assert "cannot read" in err.getvalue()
    source = tmp_path / "one.csv"
    source.write_text(HEADER + "\nAnna;a@example.org;moscow;;;2020-01-01;yes;no\n")
    closed = f"http://127.0.0.1:{free_port()}"
    assert await import_file([str(source), "--url", closed], ENV, out, err) == 2
    assert "cannot reach the members service" in err.getvalue()
    assert await import_file([str(source), "--chunk", "0"], ENV, out, err) == 2
    assert await import_file([str(source)], {"SARAFAN_HOME": str(tmp_path)}, out, err) == 2
    assert "no API token" in err.getvalue()
