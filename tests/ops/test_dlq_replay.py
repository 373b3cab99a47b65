"""`sarafan dlq replay` against a real nats-server with the per-service users: a dead letter a
service user planted is never replayed where its headers point, a genuine one is."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import nats
import nats.js.errors
from nats.js.api import KeyValueConfig, StreamConfig

from sarafan.nats_auth import ADMIN_USER
from services.engagement.app import EngagementSettings
from services.engagement.app import compose as compose_engagement
from shared.events import MemberJoined, new_event
from shared.keys import BUCKET, new_key
from tests.helpers import wait_until
from tests.integration.conftest import run_service

POISON = "members.member-joined.poison"
DEAD = "dlq.engagement.engagement-members"


async def _connect(secured, user: str) -> nats.NATS:
    return await nats.connect(
        secured.url, user=user, password=secured.passwords[user], inbox_prefix=f"_INBOX_{user}"
    )


async def _dlq(js) -> dict[int, str]:
    """Sequence → subject of every dead letter."""
    info = await js.stream_info("DLQ")
    found: dict[int, str] = {}
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            found[seq] = (await js.get_msg("DLQ", seq)).subject
        except nats.js.errors.NotFoundError:
            continue
    return found


async def _replay_all(secured, home: Path) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "NATS_URL": secured.url,
        "NATS_USER": ADMIN_USER,
        "NATS_PASSWORD": secured.passwords[ADMIN_USER],
        "SARAFAN_HOME": str(home),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sarafan.cli", "dlq", "replay", "--all",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_planted_dead_letters_are_refused_and_a_genuine_one_is_replayed(
    secured_nats, mongo_url, db_prefix, tmp_path
):
    admin = await _connect(secured_nats, ADMIN_USER)
    js = admin.jetstream()
    await js.add_stream(StreamConfig(name="MEMBERS", subjects=["members.>"]))
    keys = await js.create_key_value(KeyValueConfig(bucket=BUCKET, history=1))
    engagement = await _connect(secured_nats, "engagement")
    try:
        async with run_service(
            compose_engagement,
            EngagementSettings,
            nats_url=secured_nats.url,
            mongo_url=mongo_url,
            database=f"{db_prefix}_engagement",
            **secured_nats.settings_for("engagement"),
        ):
            stored = await js.publish(POISON, b"{not json", stream="MEMBERS")
            dead = await wait_until(lambda: _dlq(js), message="the poison was not dead-lettered")
            [(genuine, subject)] = dead.items()
            assert subject == f"{DEAD}.{POISON}"

            # What engagement's NATS user may publish: anything on dlq.engagement.>.
            _, record = new_key("planted", ["admin"])
            key_record = record.model_dump_json().encode()
            forged = new_event(
                MemberJoined.model_validate({**MemberJoined.example, "member_id": "m_forged"})
            )
            planted = {
                # The old replay published this to $KV.sarafan_keys.<id>: a permanent admin key.
                f"{DEAD}.members.member-joined.m_1": (key_record, f"$KV.{BUCKET}.{record.id}",
                                                      f"KV_{BUCKET}", "1"),
                f"{DEAD}.$KV.{BUCKET}.{record.id}": (key_record, f"$KV.{BUCKET}.{record.id}",
                                                     f"KV_{BUCKET}", "1"),
                f"{DEAD}._INBOX_members.x.y": (b"{}", "_INBOX_members.x.y", "MEMBERS", "1"),
                f"{DEAD}.members.campaign-started.c1": (b"{}", "members.campaign-started.c1",
                                                        "MEMBERS", "1"),
                # A well-formed event no producer published, claiming the poison's place.
                f"{DEAD}.members.member-joined.m_forged": (forged.to_json(), forged.nats_subject,
                                                           "MEMBERS", str(stored.seq)),
                f"{DEAD}.{POISON}": (forged.to_json(), POISON, "MEMBERS", str(stored.seq)),
            }  # fmt: skip
            for dlq_subject, (data, original, stream, seq) in planted.items():
                await engagement.jetstream().publish(
                    dlq_subject,
                    data,
                    stream="DLQ",
                    headers={
                        "Sarafan-Dlq-Subject": original,
                        "Sarafan-Dlq-Stream": stream,
                        "Sarafan-Dlq-Sequence": seq,
                        "Sarafan-Dlq-Error": "planted\x1b[2J",
                    },
                )
            before = await _dlq(js)
            assert len(before) == 1 + len(planted)

        code, out, err = await _replay_all(secured_nats, tmp_path)

        assert code == 1, (out, err)
        assert f"replayed {genuine} to {POISON}" in out
        assert f"1 dead letter(s) replayed, {len(planted)} refused (left in the DLQ)" in out
        assert (
            "names stream 'KV_sarafan_keys'; events on members.member-joined.m_1 are in MEMBERS"
            in err
        )
        assert f"'$KV.{BUCKET}.{record.id}' is not an event subject" in err
        assert "'_INBOX_members.x.y' is not an event subject" in err
        assert "members publishes no 'campaign-started'" in err
        assert f"MEMBERS holds {stored.seq} on another subject" in err
        assert f"it is not the message MEMBERS holds at {stored.seq}" in err
        try:
            await keys.get(record.id)
            raise AssertionError("a planted dead letter became an API key")
        except nats.js.errors.KeyNotFoundError:
            pass
        after = await _dlq(js)
        assert genuine not in after and set(after) == set(before) - {genuine}
        replayed = await js.get_last_msg("MEMBERS", POISON)
        assert replayed.seq > stored.seq and replayed.data == b"{not json"
        assert replayed.headers["Sarafan-Replayed-From"] == f"DLQ:{genuine}"
        forged_stored = await js.stream_info("MEMBERS", subjects_filter="members.*.m_forged")
        assert not forged_stored.state.subjects
    finally:
        await engagement.close()
        await admin.close()
