"""The `integration` NATS user on a real nats-server with the generated accounts: it reads the
public events (a core subscription or its own durable consumer) and can do nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from sarafan.nats_auth import (
    ADMIN_USER,
    DEFAULT_INTEGRATION_CONSUMERS,
    INTEGRATION_USER,
    env_references,
    integration_consumers,
    integration_permissions,
    nats_conf,
)
from sarafan.supervisor import Stack, StackConfig, StackError
from shared.events import MemberJoined, new_event, utcnow
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
DURABLE = DEFAULT_INTEGRATION_CONSUMERS[0]
# What a refused request ends in: the server drops it (and reports a violation), no reply.
REFUSED = (nats.errors.TimeoutError, nats.errors.NoRespondersError)


def _joined() -> tuple[str, bytes]:
    event = new_event(
        MemberJoined(
            member_id="m_int",
            display_name="Vera",
            region="moscow",
            contacts={"email": "vera@example.org"},
            consent={"terms": True},
            joined_at=utcnow(),
        )
    )
    return event.nats_subject, event.to_json()


async def _connect(secured, user: str, errors: list[str]) -> nats.NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        secured.url,
        user=user,
        password=secured.passwords[user],
        inbox_prefix=f"_INBOX_{user}",
        error_cb=on_error,
    )


@pytest.fixture
async def streams(secured_nats):
    """The admin's connection, with MEMBERS and CAMPAIGNS declared and one member-joined."""
    admin = await _connect(secured_nats, ADMIN_USER, [])
    js = admin.jetstream()
    await js.add_stream(StreamConfig(name="MEMBERS", subjects=["members.>"]))
    await js.add_stream(StreamConfig(name="CAMPAIGNS", subjects=["campaigns.>"]))
    await js.add_stream(StreamConfig(name="DLQ", subjects=["dlq.>"]))
    subject, body = _joined()
    await js.publish(subject, body, stream="MEMBERS")
    try:
        yield admin
    finally:
        await admin.close()


async def _violation(errors: list[str], kind: str, subject: str) -> None:
    def reported() -> bool:
        return any(kind in e.lower() and subject.lower() in e.lower() for e in errors)

    await wait_until(reported, message=f"no {kind} violation for {subject}: {errors}")


async def test_integration_user_reads_member_events_live_and_through_its_durable_consumer(
    secured_nats, streams
):
    errors: list[str] = []
    nc = await _connect(secured_nats, INTEGRATION_USER, errors)
    try:
        live = await nc.subscribe("members.>")
        await nc.flush()  # the server knows the subscription before anyone publishes
        subject, body = _joined()
        await streams.jetstream().publish(subject, body, stream="MEMBERS")
        assert (await live.next_msg(timeout=5)).subject == subject

        js = nc.jetstream(timeout=5)
        psub = await js.pull_subscribe("members.member-joined.>", durable=DURABLE, stream="MEMBERS")
        msgs = await psub.fetch(2, timeout=5)
        assert [m.subject for m in msgs] == [subject, subject]
        for msg in msgs:
            await msg.ack_sync()
        info = await js.consumer_info("MEMBERS", DURABLE)
        assert info.num_pending == 0 and info.num_ack_pending == 0
        # Its own consumer is its own to remove (a re-sync from the start).
        assert await js.delete_consumer("MEMBERS", DURABLE)
        await nc.flush()
        assert not errors, errors
    finally:
        await nc.close()
    assert "Violation" not in secured_nats.log.read_text()


async def test_integration_user_cannot_publish_events_read_dead_letters_or_purge(
    secured_nats, streams
):
    errors: list[str] = []
    nc = await _connect(secured_nats, INTEGRATION_USER, errors)
    admin_js = streams.jetstream()
    try:
        js = nc.jetstream(timeout=1)
        subject, body = _joined()
        with pytest.raises(REFUSED):
            await js.publish(subject, body, stream="MEMBERS", timeout=1)
        await _violation(errors, "publish", subject)
        await nc.subscribe("dlq.>")
        await nc.flush()
        await _violation(errors, "subscription", "dlq.>")
        with pytest.raises(REFUSED):
            await js.purge_stream("MEMBERS")
        await _violation(errors, "publish", "$JS.API.STREAM.PURGE.MEMBERS")
        with pytest.raises(REFUSED):
            await js.stream_info("DLQ")
        await _violation(errors, "publish", "$JS.API.STREAM.INFO.DLQ")
        with pytest.raises(REFUSED):
            await js.add_stream(StreamConfig(name="MINE", subjects=["mine.>"]))
        await _violation(errors, "publish", "$JS.API.STREAM.CREATE.MINE")
        assert (await admin_js.stream_info("MEMBERS")).state.messages == 1
    finally:
        await nc.close()


async def test_integration_user_cannot_touch_another_consumer_nor_create_an_unlisted_one(
    secured_nats, streams
):
    admin_js = streams.jetstream()
    config = ConsumerConfig(durable_name="engagement-members", ack_policy=AckPolicy.EXPLICIT)
    await admin_js.add_consumer("MEMBERS", config)
    errors: list[str] = []
    nc = await _connect(secured_nats, INTEGRATION_USER, errors)
    try:
        js = nc.jetstream(timeout=1)
        with pytest.raises(REFUSED):
            await js.delete_consumer("MEMBERS", "engagement-members")
        await _violation(errors, "publish", "$JS.API.CONSUMER.DELETE.MEMBERS.engagement-members")
        with pytest.raises(REFUSED):
            await js.consumer_info("MEMBERS", "engagement-members")
        psub = await js.pull_subscribe_bind(durable="engagement-members", stream="MEMBERS")
        with pytest.raises(REFUSED):
            await psub.fetch(1, timeout=1)
        await _violation(errors, "publish", "$JS.API.CONSUMER.MSG.NEXT.MEMBERS.engagement-members")
        # Nor ack (so skip) another consumer's message.
        await nc.publish("$JS.ACK.MEMBERS.engagement-members.1.1.1.0.0", b"+ACK")
        await _violation(errors, "publish", "$JS.ACK.MEMBERS.engagement-members")
        # A name that is not configured, an ephemeral consumer, or one on DLQ: refused.
        other = ConsumerConfig(name="integration-other", durable_name="integration-other")
        with pytest.raises(REFUSED):
            await js.add_consumer("MEMBERS", other)
        await _violation(errors, "publish", "$JS.API.CONSUMER.CREATE.MEMBERS.integration-other")
        with pytest.raises(REFUSED):
            await js.pull_subscribe("members.>", stream="MEMBERS")
        with pytest.raises(REFUSED):
            await js.add_consumer("DLQ", ConsumerConfig(name=DURABLE, durable_name=DURABLE))
        await _violation(errors, "publish", f"$JS.API.CONSUMER.CREATE.DLQ.{DURABLE}")
        names = {c.name for c in await admin_js.consumers_info("MEMBERS")}
        assert names == {"engagement-members"}
        assert not await admin_js.consumers_info("DLQ")
        info = await admin_js.consumer_info("MEMBERS", "engagement-members")
        assert info.num_pending == 1 and info.delivered.stream_seq == 0
    finally:
        await nc.close()


async def test_integration_consumer_pushed_at_another_streams_subjects_stores_nothing_there(
    secured_nats, streams
):
    """The server cannot restrict a consumer's config: a push consumer may deliver the events
    this user reads anyway to a subject of its choice. JetStream does not store those
    deliveries in the stream of that subject, so no service's consumer sees them."""
    nc = await _connect(secured_nats, INTEGRATION_USER, [])
    try:
        forged = "campaigns.campaign-ended.forged"
        seen = await nc.subscribe(forged)
        js = nc.jetstream(timeout=5)
        config = ConsumerConfig(durable_name=DURABLE, deliver_subject=forged)
        await js.add_consumer("MEMBERS", config)
        # Delivered to the chosen subject's subscribers, under the event's own subject.
        delivered = await seen.next_msg(timeout=5)
        assert delivered.subject.startswith("members.member-joined.")
        admin_js = streams.jetstream()
        # A marker published after the delivery: once it is stored, an earlier delivery
        # would have been stored before it.
        ack = await admin_js.publish("campaigns.marker.m", b"{}", stream="CAMPAIGNS")
        assert ack.seq == 1
        assert (await admin_js.stream_info("CAMPAIGNS")).state.messages == 1
    finally:
        await nc.close()


def test_integration_consumers_are_configured_names_starting_with_the_prefix():
    assert integration_consumers({}) == DEFAULT_INTEGRATION_CONSUMERS
    configured = {"SARAFAN_INTEGRATION_CONSUMERS": " integration-crm, integration-bot ,"}
    assert integration_consumers(configured) == ("integration-crm", "integration-bot")
    for bad in ("crm", "integration-", "integration-a.b", "integration-*", "integration- x"):
        with pytest.raises(ValueError, match="integration-"):
            integration_consumers({"SARAFAN_INTEGRATION_CONSUMERS": bad})
    allowed = integration_permissions(("integration-crm",))["publish"]["allow"]
    assert "$JS.API.CONSUMER.MSG.NEXT.MEMBERS.integration-crm" in allowed
    assert not any(DURABLE in subject for subject in allowed)
    # Nothing but JetStream calls on its own consumers (and stream and account info).
    assert all(s.startswith(("$JS.API.", "$JS.ACK.")) for s in allowed)
    assert not any("DLQ" in s or "PURGE" in s or s.endswith("*") for s in allowed)


def test_generator_grants_the_consumer_names_the_variable_lists():
    def generate(names: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SARAFAN_INTEGRATION_CONSUMERS": names}
        command = [sys.executable, "-m", "sarafan.nats_auth"]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)

    done = generate("integration-crm")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(nats_conf(env_references(), ("integration-crm",)))
    assert "$JS.API.CONSUMER.CREATE.CAMPAIGNS.integration-crm" in done.stdout
    assert DURABLE not in done.stdout
    refused = generate("crm")
    assert refused.returncode != 0 and "integration-" in refused.stderr


def test_sarafan_up_refuses_an_integration_consumer_without_the_prefix(tmp_path):
    stack = Stack(
        StackConfig.with_free_ports(tmp_path / "home"),
        environ={"SARAFAN_INTEGRATION_CONSUMERS": "crm-sync"},
    )
    with pytest.raises(StackError, match="crm-sync"):
        stack.start()
    assert not stack.children  # refused before anything started
