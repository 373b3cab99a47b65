"""Backup and restore of the embedded stack: `sarafan backup` of a running `sarafan up` with
members, the stack wiped, `sarafan up --servers-only`, `sarafan restore`, then the services:
the members, their events and what the consumers did are back, and nothing is done twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import nats

from tests.stack import UpStack, sarafan_up, wait_for

NAMES = ("Lena", "Timur", "Zarina")


def _join(up: UpStack, name: str) -> str:
    body = {
        "display_name": name,
        "email": f"{name.lower()}@example.org",
        "region": "kazan",
        "consent": {"terms": True},
    }
    r = httpx.post(f"{up.url('members')}/v1/members", headers=up.auth, json=body)
    assert r.status_code == 201, r.text
    return r.json()["member_id"]


def _inbox(up: UpStack, member_id: str) -> list[dict]:
    r = httpx.get(f"{up.url('notifier')}/v1/members/{member_id}/inbox", headers=up.auth)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def _stream_subjects(up: UpStack, stream: str) -> list[str]:
    """The subject of every message `stream` holds, read as the operator (admin)."""
    password = json.loads((up.home / "nats-users.json").read_text())["admin"]
    nc = await nats.connect(up.nats_url, user="admin", password=password)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        subjects = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            subjects.append((await js.get_msg(stream, seq)).subject)
        return subjects
    finally:
        await nc.close()


def test_a_backup_of_a_running_stack_restores_members_events_and_consumer_positions(
    tmp_path: Path,
):
    with sarafan_up(tmp_path / "before") as up:
        members = {_join(up, name): name for name in NAMES}
        for member_id in members:
            wait_for(lambda m=member_id: _inbox(up, m), 30, "the welcome was not stored")
        events_before = asyncio.run(_stream_subjects(up, "MEMBERS"))
        done = up.cli("backup", str(tmp_path / "backups"))
        assert done.returncode == 0, done.stderr
        backup = Path(done.stdout.strip().splitlines()[-1])
    assert (backup / "mongodb/sarafan_members/members.bson").stat().st_size > 0
    assert {"MEMBERS", "KV_sarafan_keys"} <= {p.name for p in (backup / "nats").iterdir()}
    assert (backup / "nats/MEMBERS/stream.tar.s2").stat().st_size > 0

    # A new, empty stack (the old one's data is gone): servers alone, the restore, then all.
    with sarafan_up(tmp_path / "after", servers_only=True) as servers:
        done = servers.cli("restore", str(backup))
        assert done.returncode == 0, done.stderr + done.stdout
        again = servers.cli("restore", str(backup))
        assert again.returncode == 1 and "holds documents" in again.stderr
    with sarafan_up(tmp_path / "after") as up:
        for member_id, name in members.items():
            r = httpx.get(f"{up.url('members')}/v1/members/{member_id}", headers=up.auth)
            assert r.status_code == 200 and r.json()["display_name"] == name, r.text
        assert asyncio.run(_stream_subjects(up, "MEMBERS")) == events_before
        # The consumers resume where they were: no welcome is sent a second time.
        for member_id in members:
            assert len(_inbox(up, member_id)) == 1
        # The restored stack goes on working.
        newcomer = _join(up, "Alsu")
        wait_for(lambda: _inbox(up, newcomer), 30, "a new member got no welcome")
