"""`sarafan keys create|list|revoke` against the members service running in-process."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx

from sarafan.embedded import free_port
from services.members.keys_cli import keys_command
from tests.integration.conftest import TOKEN, join_body
from tests.integration.test_access_support import bearer


async def _run(app: Any, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await keys_command(
        [*argv, "--url", "http://service"],
        env,
        out,
        err,
        transport=httpx.ASGITransport(app=app),
    )
    return code, out.getvalue(), err.getvalue()


async def test_the_cli_makes_a_key_shown_once_lists_it_without_secret_and_revokes_it(
    services, tmp_path: Path
):
    env = {"SARAFAN_API_TOKEN": TOKEN, "SARAFAN_HOME": str(tmp_path)}
    async with services("members") as s:
        app, http = s["members"].app, s["members"].http
        code, out, err = await _run(
            app,
            env,
            "create",
            "--name",
            "crm sync",
            "--scope",
            "members:read",
            "--scope",
            "members:write",
            "--expires-days",
            "30",
        )
        assert code == 0, err
        token = out.strip()
        assert out.count("\n") == 1 and token.startswith("sk_")  # stdout is the token alone
        assert "shown only once" in err and "members:read, members:write" in err
        key_id = token.split("_")[1]
        assert (await http.get("/v1/members", headers=bearer(token))).status_code == 200

        code, out, err = await _run(app, env, "list")
        assert code == 0, err
        header, row = out.strip().splitlines()
        assert header.split()[:3] == ["ID", "NAME", "STATUS"]
        assert row.startswith(key_id) and "crm sync" in row and "active" in row
        assert "members:read,members:write" in row and token not in out

        code, out, err = await _run(app, env, "revoke", key_id)
        assert (code, out.strip()) == (0, f"revoked {key_id} (crm sync) on every service")
        assert (await http.get("/v1/members", headers=bearer(token))).status_code == 403
        code, out, _ = await _run(app, env, "list")
        assert "revoked" in out.splitlines()[1]


async def test_the_cli_says_what_went_wrong_with_its_exit_status(services, tmp_path: Path):
    env = {"SARAFAN_API_TOKEN": TOKEN, "SARAFAN_HOME": str(tmp_path)}
    async with services("members") as s:
        app = s["members"].app
        code, _, err = await _run(app, env, "revoke", "abcdefghijkl")
        assert code == 1 and "HTTP 404 not_found" in err
        code, _, err = await _run(app, env, "create", "--name", "x", "--scope", "everything")
        assert code == 2 and "invalid choice" in err
        code, _, err = await _run(app, {"SARAFAN_HOME": str(tmp_path)}, "list")
        assert code == 2 and "no API token" in err
        code, _, err = await _run(app, {**env, "SARAFAN_API_TOKEN": "wrong"}, "list")
        assert code == 1 and "HTTP 403" in err
    out, err = io.StringIO(), io.StringIO()
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert await keys_command(["list", "--url", nowhere], env, out, err) == 2
    assert "cannot reach the members service" in err.getvalue()


async def test_the_cli_binds_a_key_to_a_member_with_a_rate_and_lists_who_each_acts_for(
    services, tmp_path: Path
):
    env = {"SARAFAN_API_TOKEN": TOKEN, "SARAFAN_HOME": str(tmp_path)}
    async with services("members") as s:
        app, http = s["members"].app, s["members"].http
        olga = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        code, out, err = await _run(
            app,
            env,
            "create",
            "--name",
            "olga app",
            "--scope",
            "engagement:write",
            "--member-id",
            olga,
            "--rate-per-minute",
            "30",
        )
        assert code == 0, err
        assert f"acts for member {olga}; writes: 30/min" in err
        bound_id = out.strip().split("_")[1]
        code, out, err = await _run(app, env, "create", "--name", "crm", "--scope", "members:read")
        assert code == 0, err
        crm_id = out.strip().split("_")[1]

        code, out, err = await _run(app, env, "list")
        assert code == 0, err
        header, *rows = out.strip().splitlines()
        assert "ACTS FOR" in header and "RATE" in header
        by_id = {row.split()[0]: row for row in rows}
        assert f"member {olga}" in by_id[bound_id] and "30/min" in by_id[bound_id]
        assert "any member" in by_id[crm_id] and "120/min (default)" in by_id[crm_id]

        code, _, err = await _run(
            app, env, "create", "--name", "x", "--scope", "admin", "--member-id", olga
        )
        assert code == 1 and "bound_admin" in err
        code, _, err = await _run(
            app, env, "create", "--name", "x", "--scope", "members:read", "--rate-per-minute", "0"
        )
        assert code == 2 and "at least 1" in err
