"""The erasure audit: after a member is erased, nothing anywhere in the stack names them.

A member with a distinctive name, email, phone and Telegram handle joins by referral, posts,
answers and is answered, receives email and webhook messages, appears in a dead letter, and is
erased. Then every document of every collection of every service's database, every message (and its
headers) of every stream — DLQ included — and the bytes of every file under the stack's home are
searched for any of those; none may be found. The files are what an attacker with the disk would
read: the JetStream store (message blocks, where a purged message's bytes used to stay), the
nx-27017 databases with their journals (where a WAL used to keep old page images), the logs.
(What the member received in their own mailbox and webhook left the platform, as it should: the
peers are outside the stack and not audited.)
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
import pytest

from sarafan.nats_auth import ADMIN_USER
from sarafan.stack_config import StackDatabases
from sarafan.supervisor import Stack, StackConfig, nats_passwords
from shared import topology
from tests.helpers import strong_token, wait_until
from tests.integration.notifier_peers import WEBHOOK_SECRET, WebhookReceiver, serve, smtp_server

TOKEN = strong_token()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DATABASES = tuple(f"sarafan_{service}" for service in topology.SERVICES)
STREAMS = (*topology.STREAMS.values(), topology.DLQ_STREAM)


@pytest.fixture
async def stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Stack, object, WebhookReceiver]]:
    receiver = WebhookReceiver(WEBHOOK_SECRET)
    with smtp_server() as mail:
        async with serve(receiver) as webhook_url:
            # The services inherit the operator's environment: the channels are on.
            monkeypatch.setenv("SMTP_URL", mail.url)  # type: ignore[attr-defined]
            monkeypatch.setenv("WEBHOOK_URL", webhook_url)
            monkeypatch.setenv("WEBHOOK_SECRET", WEBHOOK_SECRET)
            monkeypatch.setenv("SARAFAN_NOTIFIER_POLL_SECONDS", "0.2")
            running = Stack(
                StackConfig.with_free_ports(tmp_path / "home"),
                out=io.StringIO(),
                environ={**os.environ, "SARAFAN_API_TOKEN": TOKEN},
            )
            await asyncio.to_thread(running.start)
            try:
                yield running, mail, receiver
            finally:
                await asyncio.to_thread(running.stop)


async def leaks(stack: Stack, needles: dict[str, str]) -> list[str]:
    """Where any of the needles is still found: database documents, stream messages, logs."""
    found: list[str] = []
    cfg = stack.config
    mongo = StackDatabases(cfg, tz_aware=True)
    try:
        for name in DATABASES:
            db = mongo[name]
            for collection in await db.list_collection_names():
                async for doc in db[collection].find({}):
                    text = json.dumps(doc, default=str, ensure_ascii=False).lower()
                    for what, needle in needles.items():
                        if needle in text:
                            found.append(f"{name}.{collection} {doc.get('_id')}: {what}")
    finally:
        await mongo.close()
    nc = await nats.connect(
        cfg.nats_url, user=ADMIN_USER, password=nats_passwords(cfg.home)[ADMIN_USER]
    )
    try:
        js = nc.jetstream()
        for stream in STREAMS:
            try:
                state = (await js.stream_info(stream)).state
            except nats.js.errors.NotFoundError:
                continue
            for seq in range(state.first_seq, state.last_seq + 1):
                try:
                    msg = await js.get_msg(stream, seq)
                except nats.js.errors.NotFoundError:
                    continue  # purged or deleted
                text = (msg.data or b"").decode("utf-8", "replace") + json.dumps(
                    dict(msg.headers or {}), ensure_ascii=False
                )
                for what, needle in needles.items():
                    if needle in text.lower():
                        found.append(f"stream {stream} #{seq} ({msg.subject}): {what}")
    finally:
        await nc.close()
    return found + file_leaks(cfg.home, needles)


def file_leaks(home: Path, needles: dict[str, str]) -> list[str]:
    """Where any needle is still in the BYTES of a file under the stack's home: the JetStream
    store (message blocks, indexes), nx-27017's databases with their journals, the logs."""
    found: list[str] = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        try:
            content = path.read_bytes().lower()
        except FileNotFoundError:
            continue  # a journal or a block removed while we looked
        for what, needle in needles.items():
            count = content.count(needle.encode())
            if count:
                found.append(f"file {path.relative_to(home)}: {what} x{count}")
    return found


async def test_an_erased_member_is_named_nowhere_in_databases_streams_logs_or_bytes_on_disk(stack):
    running, mail, receiver = stack
    cfg = running.config
    tag = uuid.uuid4().hex[:6]
    person = {
        "name": f"Vera Victimova{tag}",
        "email": f"erasure.audit.{tag}@example.org",
        "phone": "+7 916 555-44-33",
        "telegram": f"victimova_{tag}",
    }
    needles = {
        "name": f"victimova{tag}",
        "email": f"erasure.audit.{tag}",
        "phone": "9165554433",
        "telegram": f"victimova_{tag}",
    }
    url = cfg.service_url
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as http:
        friend = (
            await http.post(
                f"{url('members')}/v1/members",
                json={"display_name": "Friend", "email": f"friend.{tag}@example.org",
                      "region": "moscow", "consent": {"terms": True, "marketing": True}},
            )
        ).json()  # fmt: skip
        joined = await http.post(
            f"{url('members')}/v1/members",
            headers={"Idempotency-Key": f"join-{tag}"},
            json={
                "display_name": person["name"],
                "email": person["email"],
                "phone": person["phone"],
                "telegram": person["telegram"],
                "region": "moscow",
                "interests": ["ecology"],
                "consent": {"terms": True, "marketing": True},
                "referral_code": friend["referral_code"],
            },
        )
        assert joined.status_code == 201, joined.text
        vera = joined.json()["member_id"]
        engagement = url("engagement")

        async def known(member_id: str) -> bool:
            got = await http.get(f"{engagement}/v1/members/{member_id}/engagement")
            return got.status_code == 200

        await wait_until(lambda: known(vera), timeout=30)
        await wait_until(lambda: known(friend["member_id"]), timeout=30)
        # The welcome goes by email (her first channel).
        await wait_until(lambda: mail.to(person["email"]), timeout=30, message="no welcome email")
        # From now on she wants webhooks: the comment on her question comes that way.
        prefs = await http.put(
            f"{url('notifier')}/v1/members/{vera}/preferences", json={"channels": ["webhook"]}
        )
        assert prefs.status_code == 200, prefs.text
        question = await http.post(
            f"{engagement}/v1/posts",
            headers={"Idempotency-Key": f"post-{tag}"},
            json={"author_id": vera, "kind": "question", "title": f"Hello from {person['name']}",
                  "body": f"write to {person['email']}"},
        )  # fmt: skip
        assert question.status_code == 201, question.text
        qid = question.json()["post_id"]
        answer = await http.post(
            f"{engagement}/v1/posts/{qid}/comments",
            json={"author_id": friend["member_id"], "body": "Here is how"},
        )
        accepted = await http.post(
            f"{engagement}/v1/posts/{qid}/accept",
            json={"comment_id": answer.json()["comment_id"], "by": vera},
        )
        assert accepted.status_code == 200, accepted.text
        other = await http.post(
            f"{engagement}/v1/posts", json={"author_id": friend["member_id"], "title": "News"}
        )
        await http.post(
            f"{engagement}/v1/posts/{other.json()['post_id']}/comments",
            headers={"Idempotency-Key": f"comment-{tag}"},
            json={"author_id": vera, "body": f"Thanks, {person['name']} here"},
        )
        now = datetime.now(UTC)
        campaign = await http.post(
            f"{url('campaigns')}/v1/campaigns",
            json={"name": "Spring", "kind": "contest", "starts_at": now.isoformat(),
                  "ends_at": (now + timedelta(days=7)).isoformat(),
                  "audience": {"regions": ["moscow"], "roles": []},
                  "scoring": {"post-created": 1}, "milestones": [], "winners": 1,
                  "announcement": {"ru": "Весна", "en": "Spring"}},
        )  # fmt: skip
        assert campaign.status_code == 201, campaign.text
        await http.post(f"{url('campaigns')}/v1/campaigns/{campaign.json()['campaign_id']}/start")
        await wait_until(lambda: receiver.delivered(vera), timeout=30, message="no webhook")
        # She volunteers: signs up for a shift starting soon and checks in with its code.
        activities = url("activities")

        async def volunteer_known() -> bool:
            got = await http.get(f"{activities}/v1/members/{vera}/activities")
            return got.status_code == 200

        await wait_until(volunteer_known, timeout=30, message="activities never learned of her")
        soon = now + timedelta(minutes=10)
        made = await http.post(
            f"{activities}/v1/activities",
            json={"title": "Planting", "region": "moscow", "organiser_id": friend["member_id"],
                  "status": "published",
                  "shifts": [{"role": "planter", "starts_at": soon.isoformat(),
                              "ends_at": (soon + timedelta(hours=2)).isoformat(),
                              "capacity": 5}]},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        shift = made.json()["shifts"][0]
        signed = await http.post(
            f"{activities}/v1/activities/{made.json()['activity_id']}/shifts/"
            f"{shift['shift_id']}/signups",
            headers={"Idempotency-Key": f"signup-{tag}"},
            json={"member_id": vera},
        )
        assert signed.status_code == 201, signed.text
        checked = await http.post(
            f"{activities}/v1/checkin", json={"code": shift["checkin_code"], "member_id": vera}
        )
        assert checked.status_code == 200, checked.text

        # A broken event about her, with her address in it: some consumer dead-letters it.
        password = nats_passwords(cfg.home)[ADMIN_USER]
        nc = await nats.connect(cfg.nats_url, user=ADMIN_USER, password=password)
        try:
            js = nc.jetstream()
            await js.publish(
                f"members.member-updated.{vera}",
                json.dumps({"email": person["email"], "not": "a cloud event"}).encode(),
                stream="MEMBERS",
                headers={"Nats-Msg-Id": f"poison-{tag}"},
            )

            async def dead_lettered() -> bool:
                state = (await js.stream_info("DLQ")).state
                return state.messages > 0

            await wait_until(dead_lettered, timeout=30, message="the poison was not dead-lettered")
        finally:
            await nc.close()
        assert await leaks(running, needles), "the audit finds nothing even before erasure"
        # The byte scan sees her where she is (else an empty result after erasure proves nothing).
        before = " ".join(file_leaks(cfg.home, needles))
        for place in ("streams/MEMBERS/msgs/", "streams/DLQ/msgs/", "mongo/sarafan_members.db"):
            assert place in before, f"the byte scan does not see {place}: {before}"

        erased = await http.delete(f"{url('members')}/v1/members/{vera}", params={"erase": "true"})
        assert erased.status_code == 204

        async def forgotten() -> bool:
            return not await leaks(running, needles)

        try:
            await wait_until(forgotten, timeout=60, interval=1.0, message="erasure")
        except AssertionError:
            found = await leaks(running, needles)
            raise AssertionError(
                f"{len(found)} place(s) still name the erased member:\n" + "\n".join(found)
            ) from None
