"""Leaving and erasure: member-left reaches everyone, then the member's messages leave MEMBERS."""

from __future__ import annotations

import json
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig

from shared.events import utcnow
from tests.helpers import wait_until
from tests.integration.conftest import join_body


async def _subjects_of(nc: Any, member_id: str) -> dict[str, int]:
    """What MEMBERS still holds whose subject names this member."""
    info = await nc.jetstream().stream_info("MEMBERS", subjects_filter=f"members.*.{member_id}")
    return dict(info.state.subjects or {})


async def _published(nc: Any, member_id: str, *types: str) -> bool:
    held = await _subjects_of(nc, member_id)
    return all(f"members.{t}.{member_id}" in held for t in types)


async def test_leaving_emits_member_left_and_keeps_the_profile_as_left(services, nc):
    async with services("members") as s:
        http = s["members"].http
        mid = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        assert (await http.delete(f"/v1/members/{mid}")).status_code == 204
        assert (await http.delete(f"/v1/members/{mid}")).status_code == 204  # harmless repeat
        got = (await http.get(f"/v1/members/{mid}")).json()
        assert got["status"] == "left" and got["left_at"]
        await wait_until(lambda: _published(nc, mid, "member-left"), message="no member-left")
        msg = await nc.jetstream().get_last_msg("MEMBERS", f"members.member-left.{mid}")
        assert json.loads(msg.data)["data"] == {
            "member_id": mid,
            "erase": False,
            "left_at": got["left_at"].replace("+00:00", "Z"),
        }
        assert (await _subjects_of(nc, mid))[f"members.member-left.{mid}"] == 1
        r = await http.patch(f"/v1/members/{mid}", json={"region": "x"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "member_left"
        assert (await http.delete("/v1/members/never-was")).status_code == 404


async def test_erasure_is_404_after_erasing_the_stream_and_a_second_erase_is_harmless(services, nc):
    async with services("members") as s:
        http = s["members"].http
        anna = (await http.post("/v1/members", json=join_body())).json()
        mid = anna["member_id"]
        friend = (
            await http.post("/v1/members", json=join_body(referral_code=anna["referral_code"]))
        ).json()
        await http.patch(f"/v1/members/{mid}", json={"region": "kazan"})
        await wait_until(
            lambda: _published(nc, mid, "member-joined", "member-updated", "referral-made"),
            message="events never reached MEMBERS",
        )

        assert (
            await http.delete(f"/v1/members/{mid}", params={"erase": "true"})
        ).status_code == 204
        assert (await http.get(f"/v1/members/{mid}")).status_code == 404
        assert (await http.get(f"/v1/members/{mid}/referrals")).status_code == 404
        assert mid not in [m["member_id"] for m in (await http.get("/v1/members")).json()["items"]]

        async def erased() -> bool:
            return await _subjects_of(nc, mid) == {}

        # No consumer has to take member-left first here, so it goes too.
        await wait_until(erased, timeout=15, message="member's messages still in MEMBERS")

        again = await http.delete(f"/v1/members/{mid}", params={"erase": "true"})
        assert again.status_code == 204
        assert (await http.delete(f"/v1/members/{mid}")).status_code == 204
        assert await _subjects_of(nc, mid) == {}
        # The friend's referral stays with its referrer's id only in the friend's own events.
        assert await _published(nc, friend["member_id"], "member-joined")


async def test_member_left_stays_until_every_consumer_has_taken_it(services, nc):
    js = nc.jetstream()
    async with services("members", SARAFAN_MEMBERS_ERASURE_SWEEP_SECONDS=0.2) as s:
        http = s["members"].http
        mid = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        await wait_until(lambda: _published(nc, mid, "member-joined"))
        # A service that is behind: its durable consumer exists but has not read anything.
        await js.add_consumer(
            "MEMBERS",
            ConsumerConfig(
                durable_name="slow-service",
                ack_policy=AckPolicy.EXPLICIT,
                filter_subject="members.>",
            ),
        )
        assert (await http.delete(f"/v1/members/{mid}?erase=true")).status_code == 204

        async def only_member_left() -> bool:
            return await _subjects_of(nc, mid) == {f"members.member-left.{mid}": 1}

        await wait_until(only_member_left, message="personal events were not erased")
        left = await js.get_last_msg("MEMBERS", f"members.member-left.{mid}")
        assert json.loads(left.data)["data"]["erase"] is True
        assert set(json.loads(left.data)["data"]) == {"member_id", "erase", "left_at"}

        slow = await js.pull_subscribe_bind(durable="slow-service", stream="MEMBERS")
        for msg in await slow.fetch(10, timeout=2):
            await msg.ack()

        async def erased() -> bool:
            return await _subjects_of(nc, mid) == {}

        await wait_until(erased, timeout=10, message="member-left was never erased")

        async def finished() -> bool:  # the stream is purged first, then the erasure marked done
            return await s["members"].store.erasures_pending() == []

        await wait_until(finished, message="the erasure was never marked finished")
        assert await s["members"].store.erasures_pending() == []


async def test_an_erasure_while_nats_is_down_is_finished_when_it_is_back(services, nc, nats_server):
    async with services("members", SARAFAN_MEMBERS_ERASURE_SWEEP_SECONDS=0.2) as s:
        http, store = s["members"].http, s["members"].store
        mid = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        await wait_until(lambda: _published(nc, mid, "member-joined"))
        nats_server.stop()
        try:
            r = await http.delete(f"/v1/members/{mid}", params={"erase": "true"})
            assert r.status_code == 204
            assert (await http.get(f"/v1/members/{mid}")).status_code == 404
            assert await store.erasures_pending() == [mid]
        finally:
            nats_server.start()

        async def erased() -> bool:
            if not nc.is_connected:
                return False
            return await _subjects_of(nc, mid) == {} and not await store.erasures_pending()

        await wait_until(erased, timeout=30, message="erasure not finished after NATS came back")


async def test_an_erased_referral_still_counts_for_its_referrer(services):
    async with services("members") as s:
        http = s["members"].http
        anna = (await http.post("/v1/members", json=join_body())).json()
        body = join_body(referral_code=anna["referral_code"])
        key = {"Idempotency-Key": "friend-join"}
        friend = (await http.post("/v1/members", json=body, headers=key)).json()
        url = f"/v1/members/{anna['member_id']}/referrals"
        before = (await http.get(url)).json()
        assert (
            await http.delete(f"/v1/members/{friend['member_id']}?erase=true")
        ).status_code == 204
        after = (await http.get(url)).json()
        assert after["total"] == before["total"] == 1
        assert after["items"] == [
            {
                "member_id": friend["member_id"],
                "display_name": None,
                "status": "erased",
                "joined_at": before["items"][0]["joined_at"],
            }
        ]
        # The join's Idempotency-Key record went with the profile: a replay cannot show the
        # erased person's data; it joins afresh (the email is free again: erased is forgotten).
        replay = await http.post("/v1/members", json=body, headers=key)
        assert replay.status_code == 201 and "Idempotent-Replayed" not in replay.headers
        assert replay.json()["member_id"] != friend["member_id"]


async def test_erasure_deletes_every_idempotency_record_about_the_member(services):
    async with services("members") as s:
        http, db = s["members"].http, s["members"].runtime.db
        records = db["idempotency_keys"]
        anna = (
            await http.post("/v1/members", json=join_body(), headers={"Idempotency-Key": "a-1"})
        ).json()
        bob = (
            await http.post("/v1/members", json=join_body(), headers={"Idempotency-Key": "b-1"})
        ).json()
        mid = anna["member_id"]
        # Any other request about her that the kernel kept (it indexes them by member_id).
        await records.insert_one(
            {
                "_id": "/v1/members/elsewhere:a-2",
                "member_id": mid,
                "state": "done",
                "status": 200,
                "body": json.dumps({"member_id": mid, "display_name": "Anna"}),
                "created_at": utcnow(),
            }
        )
        assert await records.count_documents({"member_id": mid}) == 2

        assert (await http.delete(f"/v1/members/{mid}?erase=true")).status_code == 204
        assert await records.count_documents({"member_id": mid}) == 0
        left = await records.find({}).to_list(None)
        assert [r["member_id"] for r in left] == [bob["member_id"]]
        assert not any(anna["contacts"]["email"] in r.get("body", "") for r in left)


async def _dead_letters(nc: Any, member_id: str) -> dict[str, int]:
    info = await nc.jetstream().stream_info("DLQ", subjects_filter=f"dlq.*.*.*.*.{member_id}")
    return dict(info.state.subjects or {})


async def test_erasure_erases_the_members_dead_letters_and_keeps_the_others(services, nc):
    js = nc.jetstream()
    async with services("members", "engagement", SARAFAN_MEMBERS_ERASURE_SWEEP_SECONDS=0.2) as s:
        http, store = s["members"].http, s["members"].store
        anna = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        bob = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        # A poison member-updated about each of them: engagement's consumer dead-letters it.
        for mid in (anna, bob):
            await js.publish(f"members.member-updated.{mid}", b"not an event", stream="MEMBERS")

        async def both_dead_lettered() -> bool:
            return bool(await _dead_letters(nc, anna)) and bool(await _dead_letters(nc, bob))

        await wait_until(both_dead_lettered, timeout=20, message="nothing was dead-lettered")
        assert all(
            subject.startswith("dlq.engagement.") for subject in await _dead_letters(nc, anna)
        )
        bobs = await _dead_letters(nc, bob)

        assert (await http.delete(f"/v1/members/{anna}?erase=true")).status_code == 204

        async def forgotten() -> bool:
            return not await store.erasures_pending() and await _dead_letters(nc, anna) == {}

        await wait_until(forgotten, timeout=30, message="anna's dead letters are still in DLQ")
        assert await _subjects_of(nc, anna) == {}
        assert await _dead_letters(nc, bob) == bobs  # someone else's stay for an operator
