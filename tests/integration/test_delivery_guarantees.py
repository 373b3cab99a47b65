"""The core promise against real servers: no event lost, no effect doubled, poison isolated."""

from __future__ import annotations

import json

import nats
from pymongo import AsyncMongoClient

from shared.events import MemberJoined, new_event
from tests.helpers import StoppedRelay, wait_until
from tests.integration.conftest import join_body


async def stream_messages(js, stream: str, subject: str) -> list:
    """Every message currently stored in `stream` on `subject` (read with an ephemeral consumer)."""
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return []
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    found = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                return found
            found.append(msg)
    finally:
        await sub.unsubscribe()


async def test_outbox_event_left_by_a_crash_is_published_once_when_the_relay_runs_again(
    services, nc, mongo_url, db_prefix
):
    js = nc.jetstream()
    async with services("members") as s:
        StoppedRelay(s["members"].runtime.relay)  # the process "dies" between write and publish
        r = await s["members"].http.post("/v1/members", json=join_body())
        assert r.status_code == 201
        mid = r.json()["member_id"]
        doc = await s["members"].store.members.find_one({"_id": mid})
        assert doc["outbox_pending"] == 1 and len(doc["outbox"]) == 1
        assert await stream_messages(js, "MEMBERS", f"members.*.{mid}") == []
    # A new process over the same database: its sweeper finds the pending entry.
    async with services("members") as s:
        await wait_until(
            lambda: stream_messages(js, "MEMBERS", f"members.*.{mid}"),
            message="the outbox entry was never published",
        )
        await wait_until(lambda: _pending_is_zero(s["members"].store.members, mid))
        # Marked sent only after the PubAck: nothing is left for another sweep to publish.
        assert await s["members"].runtime.relay.sweep() == 0
    published = await stream_messages(js, "MEMBERS", f"members.*.{mid}")
    assert len(published) == 1


async def _pending_is_zero(coll, mid):
    doc = await coll.find_one({"_id": mid})
    return doc["outbox_pending"] == 0 and not doc["outbox"]


async def test_republishing_an_acknowledged_event_id_is_deduplicated_by_jetstream(services, nc):
    js = nc.jetstream()
    async with services("members") as s:
        r = await s["members"].http.post("/v1/members", json=join_body())
        mid = r.json()["member_id"]
        msgs = await wait_until(lambda: stream_messages(js, "MEMBERS", f"members.*.{mid}"))
        event = json.loads(msgs[0].data)
        ack = await js.publish(
            msgs[0].subject, msgs[0].data, stream="MEMBERS", headers={"Nats-Msg-Id": event["id"]}
        )
        assert ack.duplicate
    assert len(await stream_messages(js, "MEMBERS", f"members.*.{mid}")) == 1


async def test_join_succeeds_while_nats_is_down_and_the_welcome_arrives_after(
    services, nats_server
):
    async with services("members", "notifier") as s:
        nats_server.stop()
        r = await s["members"].http.post("/v1/members", json=join_body())
        assert r.status_code == 201, r.text
        mid = r.json()["member_id"]
        # Still ready: the write waits in the outbox, which is what readiness promises.
        ready = await s["members"].http.get("/readyz")
        assert ready.status_code == 200
        nats_server.start()

        async def welcomed():
            return (await s["notifier"].http.get(f"/v1/members/{mid}/inbox")).json()["items"]

        items = await wait_until(welcomed, timeout=30, message="no welcome after NATS came back")
        assert [i["template"] for i in items] == ["welcome"]


async def test_poison_messages_go_to_the_dlq_and_the_next_valid_event_is_processed(services, nc):
    js = nc.jetstream()
    async with services("members", "notifier") as s:
        await js.publish(
            "members.member-joined.bad1",
            b"{not json",
            stream="MEMBERS",
            headers={"Nats-Msg-Id": "bad1"},
        )
        invalid = new_event(
            MemberJoined.model_validate({**MemberJoined.example, "member_id": "bad2"})
        ).model_dump(mode="json")
        invalid["data"]["consent"] = "yes please"  # not the schema
        await js.publish(
            "members.member-joined.bad2",
            json.dumps(invalid).encode(),
            stream="MEMBERS",
            headers={"Nats-Msg-Id": "bad2"},
        )
        r = await s["members"].http.post("/v1/members", json=join_body())
        mid = r.json()["member_id"]

        async def welcomed():
            return (await s["notifier"].http.get(f"/v1/members/{mid}/inbox")).json()["items"]

        await wait_until(welcomed, message="the valid event after the poison was not processed")
        dead = await wait_until(lambda: _dlq(js, 2), message="poison not in DLQ")
        reasons = {m.headers["Sarafan-Dlq-Subject"]: m.headers["Sarafan-Dlq-Error"] for m in dead}
        assert "not JSON" in reasons["members.member-joined.bad1"]
        assert "consent" in reasons["members.member-joined.bad2"]
        for m in dead:
            # dlq.<service>.<consumer>.<original subject>: erasure purges by the member's id.
            assert m.subject == f"dlq.notifier.notifier-members.{m.headers['Sarafan-Dlq-Subject']}"
            assert int(m.headers["Sarafan-Dlq-Deliveries"]) == 1
            assert m.headers["Sarafan-Dlq-Stream"] == "MEMBERS"
        assert dead[0].data == b"{not json"  # the original payload, unchanged
        metrics = (await s["notifier"].http.get("/metrics")).text
        assert (
            'sarafan_dlq_messages_total{consumer="notifier-members",service="notifier"} 2.0'
            in metrics
        )


async def _dlq(js, n):
    msgs = await stream_messages(js, "DLQ", "dlq.>")
    return msgs if len(msgs) >= n else None


async def test_same_cloudevent_under_two_msg_ids_gives_one_welcome(
    services, nc, mongo_url, db_prefix
):
    js = nc.jetstream()
    async with services("members", "notifier") as s:
        event = new_event(
            MemberJoined.model_validate({**MemberJoined.example, "member_id": "m_dup"})
        )
        for msg_id in ("first", "second"):
            ack = await js.publish(
                event.nats_subject,
                event.to_json(),
                stream="MEMBERS",
                headers={"Nats-Msg-Id": msg_id},
            )
            assert not ack.duplicate

        async def consumed_both():
            info = await js.consumer_info("MEMBERS", "notifier-members")
            return info.num_ack_pending == 0 and info.delivered.stream_seq >= 2

        await wait_until(consumed_both)
        items = (await s["notifier"].http.get("/v1/members/m_dup/inbox")).json()["items"]
        assert len(items) == 1
        client = AsyncMongoClient(mongo_url)
        try:
            n = await client[f"{db_prefix}_notifier"]["deliveries"].count_documents(
                {"member_id": "m_dup"}
            )
        finally:
            await client.close()
        assert n == 1
        metrics = (await s["notifier"].http.get("/metrics")).text
        assert 'outcome="duplicate",service="notifier",type="member-joined"} 1.0' in metrics
