"""The walking skeleton's flow: join over HTTP → member-joined on JetStream → in-app welcome."""

from __future__ import annotations

import asyncio
import json

from tests.helpers import wait_until
from tests.integration.conftest import join_body


async def test_join_publishes_member_joined_and_the_welcome_reaches_the_inbox(services, nc):
    seen: list = []

    async def collect(msg):
        seen.append(msg)

    sub = await nc.subscribe("members.>", cb=collect)
    async with services("members", "notifier") as s:
        members, notifier = s["members"].http, s["notifier"].http
        r = await members.post(
            "/v1/members",
            json=join_body(display_name="Ольга"),
            headers={"X-Correlation-Id": "req-42"},
        )
        assert r.headers["X-Correlation-Id"] == "req-42"
        assert r.status_code == 201, r.text
        member = r.json()
        mid = member["member_id"]
        assert len(member["referral_code"]) == 7

        await wait_until(lambda: any(m.subject == f"members.member-joined.{mid}" for m in seen))
        msg = next(m for m in seen if m.subject == f"members.member-joined.{mid}")
        event = json.loads(msg.data)
        assert event["specversion"] == "1.0" and event["type"] == "member-joined"
        assert event["subject"] == mid and event["source"] == "/services/members"
        assert event["data"]["display_name"] == "Ольга"
        assert event["correlationid"] == "req-42"  # the request's id follows its events

        async def inbox():
            items = (await notifier.get(f"/v1/members/{mid}/inbox")).json()["items"]
            return items

        items = await wait_until(inbox, message="welcome never reached the inbox")
        assert len(items) == 1
        assert items[0]["template"] == "welcome"
        assert "Ольга" in items[0]["title"]  # ru template for a ru member
        assert items[0]["cause_event_id"] == event["id"]
    await sub.unsubscribe()


async def test_join_then_get_member(services):
    async with services("members") as s:
        http = s["members"].http
        r = await http.post("/v1/members", json=join_body(email=" Anna.Smith@Example.ORG "))
        assert r.status_code == 201
        got = await http.get(f"/v1/members/{r.json()['member_id']}")
        assert got.status_code == 200
        assert got.json()["contacts"]["email"] == "anna.smith@example.org"
        assert (await http.get("/v1/members/nope")).status_code == 404
        await asyncio.sleep(0)
