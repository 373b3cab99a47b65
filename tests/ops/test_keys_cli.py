"""`sarafan keys` against a real `sarafan up`, where each service is its own NATS user: a key
made by the CLI works on every service, and its revocation reaches every one."""

from __future__ import annotations

import httpx

from tests.stack import SERVICES, UpStack, sarafan_up, wait_for

#: One read per service, each needing that service's read scope.
READS = {
    "members": ("/v1/members", "members:read"),
    "engagement": ("/v1/leaderboard", "engagement:read"),
    "campaigns": ("/v1/campaigns", "campaigns:read"),
    "notifier": ("/v1/notifications", "notifier:read"),
    "activities": ("/v1/activities", "activities:read"),
}


def _statuses(up: UpStack, token: str) -> set[int]:
    headers = {"Authorization": f"Bearer {token}"}
    return {
        httpx.get(f"{up.url(name)}{READS[name][0]}", headers=headers, timeout=10).status_code
        for name in SERVICES
    }


def test_a_key_made_by_the_cli_works_on_every_service_until_the_cli_revokes_it(tmp_path):
    with sarafan_up(tmp_path) as up:
        scopes = [arg for _, scope in READS.values() for arg in ("--scope", scope)]
        made = up.cli("keys", "create", "--name", "ops dashboard", *scopes, "--expires-days", "7")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert token.startswith("sk_") and "shown only once" in made.stderr
        key_id = token.split("_")[1]
        wait_for(lambda: _statuses(up, token) == {200}, 10, "the key never worked everywhere")

        listed = up.cli("keys", "list")
        assert listed.returncode == 0, listed.stderr
        assert key_id in listed.stdout and "ops dashboard" in listed.stdout
        assert token not in listed.stdout

        revoked = up.cli("keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        wait_for(lambda: _statuses(up, token) == {403}, 10, "the revoked key still worked")
