"""`sarafan keys create|list|revoke`: manage API keys through the members service's /v1/keys.

The command authenticates with the bootstrap key (SARAFAN_API_TOKEN, or the one `sarafan up`
stored) or any key with the `admin` scope. `create` prints the new token alone on stdout (so
`TOKEN=$(sarafan keys create ...)` keeps it) and, on stderr, that it is shown only this once.

Exit status: 0 done, 1 refused by the service (unknown key, missing scope, NATS away),
2 a usage or connection error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import httpx

from services.members.cli import members_url
from shared.keys import SCOPES
from shared.settings import OpsConfig

#: A key lives at most this long when it has an expiry (the platform's dates end in 2100).
MAX_EXPIRY_DAYS = 36_500


class UsageError(Exception):
    pass


class Refused(Exception):
    pass


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarafan keys",
        description="API keys with scopes, shared by every service: a key per integration, "
        "least privilege, revocable everywhere within seconds.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key; its token is printed once")
    create.add_argument("--name", required=True, help="who uses it: 'sign-up page'")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=list(SCOPES),
        metavar="SCOPE",
        help="a scope the key holds (repeat for more): " + ", ".join(SCOPES),
    )
    create.add_argument(
        "--expires-days", type=int, metavar="N", help="stop working after N days (default: never)"
    )
    create.add_argument(
        "--member-id",
        metavar="ID",
        help="bind the key to this member: it acts as them only (default: any member)",
    )
    create.add_argument(
        "--rate-per-minute",
        type=int,
        metavar="N",
        help="writes a minute it may make to each service "
        "(default: the services' SARAFAN_KEY_RATE_PER_MINUTE)",
    )
    actions.add_parser(
        "list", help="every key: id, name, status, who it acts for, rate, scopes (never a token)"
    )
    revoke = actions.add_parser("revoke", help="revoke a key on every service")
    revoke.add_argument("key_id", metavar="ID", help="the key's id (`sarafan keys list`)")
    for sub in (create, actions.choices["list"], revoke):
        sub.add_argument(
            "--url",
            default=members_url(environ),
            help="members service base URL (SARAFAN_MEMBERS_URL)",
        )
    return parser


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return response.text[:500]


async def _call(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    try:
        response = await client.request(method, path, **kw)
    except httpx.TransportError as exc:
        raise UsageError(f"cannot reach the members service at {client.base_url}: {exc}") from exc
    if response.status_code >= 400:
        raise Refused(f"HTTP {response.status_code} {_error_text(response)}")
    return response.json()


def _when(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def _rate(key: dict[str, Any]) -> str:
    rate = key.get("rate_per_minute")
    if rate is None:
        return "-"
    return f"{rate}/min" + (" (default)" if key.get("rate_from") == "default" else "")


def key_table(items: list[dict[str, Any]]) -> str:
    """The keys as a table an operator reads (ids to revoke, what each may do)."""
    if not items:
        return "no API keys yet (the bootstrap key SARAFAN_API_TOKEN is not listed)"
    rows = [("ID", "NAME", "STATUS", "ACTS FOR", "RATE", "CREATED", "EXPIRES", "SCOPES")]
    for k in items:
        rows.append(
            (
                k["key_id"],
                k["name"][:40],
                k["status"],
                k.get("acts_for") or "any member",
                _rate(k),
                _when(k["created_at"]),
                _when(k.get("expires_at")),
                ",".join(k["scopes"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in rows
    )


async def _work(
    args: argparse.Namespace, client: httpx.AsyncClient, out: TextIO, err: TextIO
) -> None:
    if args.action == "create":
        body: dict[str, Any] = {"name": args.name, "scopes": args.scopes}
        if args.expires_days is not None:
            if not 1 <= args.expires_days <= MAX_EXPIRY_DAYS:
                raise UsageError(f"--expires-days must be between 1 and {MAX_EXPIRY_DAYS}")
            expires = datetime.now(UTC) + timedelta(days=args.expires_days)
            body["expires_at"] = expires.isoformat()
        if args.member_id is not None:
            body["member_id"] = args.member_id
        if args.rate_per_minute is not None:
            if args.rate_per_minute < 1:
                raise UsageError("--rate-per-minute must be at least 1")
            body["rate_per_minute"] = args.rate_per_minute
        made = await _call(client, "POST", "/v1/keys", json=body)
        print(made["token"], file=out, flush=True)
        until = f", expires {_when(made['expires_at'])} UTC" if made.get("expires_at") else ""
        print(
            f"key {made['key_id']} ({made['name']}): {', '.join(made['scopes'])}{until}; "
            f"acts for {made.get('acts_for', 'any member')}; writes: {_rate(made)}\n"
            "This token is shown only once and is not kept anywhere: store it now.",
            file=err,
        )
    elif args.action == "list":
        print(key_table((await _call(client, "GET", "/v1/keys"))["items"]), file=out)
    else:
        done = await _call(client, "DELETE", f"/v1/keys/{args.key_id}")
        print(f"revoked {done['key_id']} ({done['name']}) on every service", file=out)


async def keys_command(
    argv: list[str],
    environ: Mapping[str, str] = os.environ,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """The command itself (async, so a test can run it against the app in-process)."""
    try:
        # argparse writes its usage and errors to the streams given, like the rest.
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = _parser(environ).parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage
        return 0 if exc.code == 0 else 2
    try:
        token = OpsConfig.from_env(environ).api_token
        if not token:
            raise UsageError("no API token (set SARAFAN_API_TOKEN or run `sarafan up` first)")
        async with httpx.AsyncClient(
            base_url=args.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30, connect=5),
            transport=transport,
        ) as client:
            await _work(args, client, out, err)
    except UsageError as exc:
        print(f"sarafan keys: {exc}", file=err)
        return 2
    except Refused as exc:
        print(f"sarafan keys {args.action}: {exc}", file=err)
        return 1
    return 0
