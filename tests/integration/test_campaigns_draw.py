"""The draw against real NATS and MongoDB: committed at the start, hidden until the end, frozen
at the end, revealed in campaign-ended, checked by `sarafan campaigns verify-draw`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from services.campaigns.cli import verify_draw_main
from shared import keys
from shared.events import PostCreated, utcnow
from tests.helpers import wait_until
from tests.integration.test_access_support import bearer, known_everywhere
from tests.integration.test_campaigns_flows import post
from tests.integration.test_campaigns_scheduler import stored_events, two_replicas
from tests.integration.test_campaigns_support import (
    Collector,
    campaign_body,
    create_and_start,
    declare_streams,
    member_joined,
    publish,
    wait_known,
    wait_points,
)

DRAW = {
    "kind": "contest",
    "winner_rule": "draw",
    "scoring": {"post-created": 1},
    "milestones": [2],
}


async def stored_secret(running: Any, campaign_id: str) -> str:
    """The secret as the database holds it (no route shows it)."""
    doc = await running.store.campaigns.find_one({"_id": campaign_id}, {"draw_secret": 1})
    return doc["draw_secret"]


async def members_with_posts(nc: Any, running: Any, cid: str, posts: dict[str, int]) -> None:
    """Members known to the service, each with that many posts scored (milestone 2 reached)."""
    people = {name: member_joined(name) for name in posts}
    for person in people.values():
        await publish(nc, person)
    await wait_known(running.store, *people)
    for name, count in posts.items():
        for _ in range(count):
            await publish(nc, post(name))
    await wait_points(running.http, cid, {name: float(n) for name, n in posts.items() if n})


async def wait_handled(nc: Any, running: Any, posts: list[PostCreated]) -> None:
    """Until the service's engagement consumer has handled the events of these posts."""
    js = nc.jetstream()
    ids = []
    for data in posts:
        msg = await js.get_last_msg("ENGAGEMENT", f"engagement.post-created.{data.post_id}")
        ids.append(f"campaigns-engagement:{json.loads(msg.data)['id']}")

    async def handled() -> bool:
        found = running.runtime.db["processed_events"].find({"_id": {"$in": ids}}, {"_id": 1})
        return len(await found.to_list(None)) == len(ids)

    await wait_until(handled, message="the posts were never handled")


def verify(campaign_id: str, transport: httpx.BaseTransport, *files: str) -> tuple[int, str]:
    out = io.StringIO()
    argv = [campaign_id, *files]
    code = verify_draw_main(argv, environ={"SARAFAN_API_TOKEN": "t"}, out=out, transport=transport)
    return code, out.getvalue()


def serving(document: dict[str, Any]) -> httpx.MockTransport:
    """What `GET /v1/campaigns/{id}` answered, for the command (which speaks sync HTTP)."""
    return httpx.MockTransport(lambda _: httpx.Response(200, content=json.dumps(document)))


def nothing_asked() -> httpx.MockTransport:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"the command asked the service: {request.url}")

    return httpx.MockTransport(refuse)


def saved(tmp_path: Path, name: str, event: dict[str, Any]) -> list[str]:
    """An event saved to a file as an outside checker would keep it; the command's option."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(event))
    return [f"--{name}", str(path)]


async def test_a_draw_commits_at_its_start_hides_its_secret_and_reveals_it_when_it_ends(
    services, nc, caplog, tmp_path
):
    caplog.set_level(logging.DEBUG, logger="sarafan")
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    seen = await Collector.on(nc, "campaigns.>")
    async with services("campaigns") as s:
        http = s["campaigns"].http
        r = await http.post("/v1/campaigns", json=campaign_body(**DRAW, winners=2))
        cid = r.json()["campaign_id"]
        start = await http.post(f"/v1/campaigns/{cid}/start", headers={"Idempotency-Key": "s1"})
        assert start.status_code == 200, start.text
        secret = await stored_secret(s["campaigns"], cid)
        commitment = hashlib.sha256(bytes.fromhex(secret)).hexdigest()
        await wait_until(lambda: seen.of_type("campaign-started"), message="never announced")
        [started] = seen.of_type("campaign-started")
        assert started["data"]["draw_commitment"] == commitment
        await members_with_posts(nc, s["campaigns"], cid, {"m_anna": 3, "m_boris": 2, "m_vera": 1})
        await wait_until(lambda: len(seen.of_type("milestone-reached")) == 2, message="milestones")

        # Before the end: every read, a replayed start, every event and every log line.
        answers = [
            start,
            await http.post(f"/v1/campaigns/{cid}/start", headers={"Idempotency-Key": "s1"}),
            await http.get(f"/v1/campaigns/{cid}"),
            await http.get("/v1/campaigns"),
            await http.get("/v1/campaigns", params={"status": "active"}),
            await http.get(f"/v1/campaigns/{cid}/leaderboard"),
            await http.get(f"/v1/campaigns/{cid}/report"),
        ]
        assert answers[1].headers.get("Idempotent-Replayed") == "true"
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert [a for a in answers if secret in a.text] == []
        shown = answers[2].json()
        assert shown["draw_commitment"] == commitment and shown["result"] is None
        assert secret not in json.dumps(seen.events)
        assert secret not in caplog.text

        ended = await http.post(f"/v1/campaigns/{cid}/end")
        assert ended.status_code == 200, ended.text
        result = ended.json()["result"]
        assert result["draw"]["procedure"] == "sarafan-draw-v2"
        assert result["draw"]["secret"] == secret
        assert len(result["winners"]) == 2
        await wait_until(lambda: seen.of_type("campaign-ended"), message="no campaign-ended")
        [ended_event] = seen.of_type("campaign-ended")
        revealed = ended_event["data"]["draw"]
        assert (revealed["secret"], revealed["seed"]) == (secret, result["draw"]["seed"])
        assert revealed["standings"] == [
            ["m_anna", "3.00"],
            ["m_boris", "2.00"],
            ["m_vera", "1.00"],
        ]
        assert secret not in caplog.text  # the log never has it, even after the end

        # An outside checker with the two events alone; the operator with the service.
        files = saved(tmp_path, "started", started) + saved(tmp_path, "ended", ended_event)
        code, out = verify(cid, nothing_asked(), *files)
        assert code == 0 and "MATCH" in out, out
        assert f"ok: SHA-256 of the revealed secret is the commitment {commitment}" in out
        fetched = (await http.get(f"/v1/campaigns/{cid}")).json()
        code, out = verify(cid, serving(fetched))
        assert code == 0 and "MATCH" in out, out


async def test_a_tampered_secret_or_standings_fails_verify_draw(services, nc, tmp_path):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    seen = await Collector.on(nc, "campaigns.>")
    async with services("campaigns") as s:
        http = s["campaigns"].http
        cid = (await create_and_start(http, **DRAW))["campaign_id"]
        await members_with_posts(nc, s["campaigns"], cid, {"m_anna": 2, "m_boris": 1})
        assert (await http.post(f"/v1/campaigns/{cid}/end")).status_code == 200
        await wait_until(lambda: seen.of_type("campaign-ended"), message="no campaign-ended")
        [started], [ended] = seen.of_type("campaign-started"), seen.of_type("campaign-ended")
        fetched = (await http.get(f"/v1/campaigns/{cid}")).json()

    # Another secret (a service picking one that suits it after the start).
    other = json.loads(json.dumps(fetched))
    other["result"]["draw"]["secret"] = "ab" * 32
    code, out = verify(cid, serving(other))
    assert code == 1
    assert "MISMATCH: commitment differs: SHA-256 of the revealed secret is " in out
    assert "MISMATCH: seed differs" in out

    # Other standings (a post slipped in after the freeze), in the resource and in the event.
    more = json.loads(json.dumps(fetched))
    more["result"]["draw"]["entrants"][1]["points"] = 5.0
    code, out = verify(cid, serving(more))
    assert code == 1 and "MISMATCH: standings differ" in out and "MISMATCH: seed differs" in out
    forged = json.loads(json.dumps(ended))
    forged["data"]["draw"]["standings"][1][1] = "5.00"
    files = saved(tmp_path, "started", started) + saved(tmp_path, "ended", forged)
    code, out = verify(cid, nothing_asked(), *files)
    assert code == 1 and "MISMATCH: standings differ" in out, out

    # A commitment rewritten with the secret: campaign-started, published at the start, says no.
    rewritten = json.loads(json.dumps(started))
    rewritten["data"]["draw_commitment"] = hashlib.sha256(b"\xab" * 32).hexdigest()
    files = saved(tmp_path, "started", rewritten)
    code, out = verify(cid, serving(fetched), *files)
    assert code == 1 and "MISMATCH: commitments differ: campaign-started has" in out, out


async def test_a_manual_early_end_freezes_the_standings_then_and_is_recorded_with_its_key(
    services, nc, caplog
):
    caplog.set_level(logging.INFO, logger="sarafan.campaigns")
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    seen = await Collector.on(nc, "campaigns.>")
    async with services("campaigns") as s:
        running, http = s["campaigns"], s["campaigns"].http
        token, record = keys.new_key("campaign manager", ["campaigns:manage", "campaigns:read"])
        await keys.put(running.runtime.bus.js, record)
        await known_everywhere({"campaigns": running}, [record.id])
        cid = (await create_and_start(http, **DRAW))["campaign_id"]
        await members_with_posts(nc, running, cid, {"m_anna": 2, "m_boris": 1})

        r = await http.post(f"/v1/campaigns/{cid}/end", headers=bearer(token))
        assert r.status_code == 200, r.text
        campaign = r.json()
        ending = campaign["ending"]
        assert (ending["by_hand"], ending["key_id"], ending["early"]) == (True, record.id, True)
        assert ending["frozen_at"] == campaign["window"]["end"]
        assert datetime.fromisoformat(ending["frozen_at"]) < datetime.fromisoformat(
            campaign["ends_at"]
        )
        assert (await http.get(f"/v1/campaigns/{cid}")).json()["ending"] == ending
        await wait_until(lambda: seen.of_type("campaign-ended"), message="no campaign-ended")
        [event] = seen.of_type("campaign-ended")
        assert event["data"]["ending"] == ending and event["keyid"] == record.id
        [line] = [m for m in caplog.messages if "ended early by hand" in m]
        assert cid in line and record.id in line

        # After the freeze nothing counts: neither a post timed before it arriving now nor one
        # timed after it.
        frozen = datetime.fromisoformat(ending["frozen_at"])
        late = [post("m_boris", frozen - timedelta(seconds=1)), post("m_boris", utcnow())]
        for data in late:
            await publish(nc, data)

        await wait_handled(nc, running, late)
        assert (await http.get(f"/v1/campaigns/{cid}")).json()["result"] == campaign["result"]
        assert [e["member_id"] for e in campaign["result"]["draw"]["entrants"]] == [
            "m_anna",
            "m_boris",
        ]
        code, out = verify(cid, serving((await http.get(f"/v1/campaigns/{cid}")).json()))
        assert code == 0, out


async def test_events_timed_after_ends_at_never_change_the_draw(services, nc, tmp_path):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    seen = await Collector.on(nc, "campaigns.>")
    grace = timedelta(hours=1)  # the scheduler ends it when the test says (tick below)
    async with services(
        "campaigns",
        SARAFAN_CAMPAIGNS_SCHEDULER_SECONDS=3600,
        SARAFAN_CAMPAIGNS_END_GRACE_SECONDS=grace.total_seconds(),
    ) as s:
        running, http = s["campaigns"], s["campaigns"].http
        ends_at = utcnow() + timedelta(seconds=3)
        cid = (await create_and_start(http, **DRAW, ends_at=ends_at.isoformat()))["campaign_id"]
        ends_at = datetime.fromisoformat((await http.get(f"/v1/campaigns/{cid}")).json()["ends_at"])
        await members_with_posts(nc, running, cid, {"m_anna": 1, "m_boris": 1, "m_vera": 0})
        await wait_until(lambda: utcnow() > ends_at + timedelta(seconds=1.5), timeout=10)

        # Published after ends_at: one timed after it, one at it (the window is [start, end)),
        # and one timed before it that arrives late, before the draw: only that one counts.
        await publish(nc, post("m_vera", ends_at + timedelta(seconds=1)))
        await publish(nc, post("m_boris", ends_at))
        await publish(nc, post("m_anna", ends_at - timedelta(seconds=1)))
        await wait_points(http, cid, {"m_anna": 2.0, "m_boris": 1.0})

        await running.jobs.tick(ends_at + grace + timedelta(seconds=1))
        campaign = (await http.get(f"/v1/campaigns/{cid}")).json()
        assert campaign["status"] == "ended"
        assert campaign["ending"]["by_hand"] is False and campaign["ending"]["early"] is False
        assert datetime.fromisoformat(campaign["ending"]["frozen_at"]) == ends_at
        entrants = {e["member_id"]: e["points"] for e in campaign["result"]["draw"]["entrants"]}
        assert entrants == {"m_anna": 2.0, "m_boris": 1.0}

        # A post timed before ends_at that arrives after the draw changes nothing either.
        latecomer = post("m_vera", ends_at - timedelta(seconds=2))
        await publish(nc, latecomer)
        await wait_handled(nc, running, [latecomer])
        assert (await http.get(f"/v1/campaigns/{cid}")).json()["result"] == campaign["result"]
        await wait_until(lambda: seen.of_type("campaign-ended"), message="no campaign-ended")
        [started], [ended] = seen.of_type("campaign-started"), seen.of_type("campaign-ended")
        files = saved(tmp_path, "started", started) + saved(tmp_path, "ended", ended)
        code, out = verify(cid, nothing_asked(), *files)
        assert code == 0 and "MATCH" in out, out


async def test_two_replicas_racing_to_start_a_draw_keep_the_one_secret_its_commitment_names(
    nc, nats_test_url, mongo_url, db_prefix
):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    seen = await Collector.on(nc, "campaigns.campaign-started.>")
    async with AsyncExitStack() as stack:
        a, b = await two_replicas(
            stack,
            nats_test_url,
            mongo_url,
            f"{db_prefix}_campaigns",
            SARAFAN_CAMPAIGNS_SCHEDULER_SECONDS=60,
        )
        cid = (await a.http.post("/v1/campaigns", json=campaign_body(**DRAW))).json()["campaign_id"]
        replies = await asyncio.gather(
            *[replica.http.post(f"/v1/campaigns/{cid}/start") for replica in (a, b, a, b)]
        )
        assert sorted(r.status_code for r in replies) == [200, 409, 409, 409]
        [winner] = [r.json() for r in replies if r.status_code == 200]
        await wait_until(lambda: seen.events, message="campaign-started never published")

        async def flushed() -> bool:
            return await stored_events(nc, f"campaigns.campaign-started.{cid}") == 1

        await wait_until(flushed, message="campaign-started never stored")
        secret = await stored_secret(a, cid)
        commitment = hashlib.sha256(bytes.fromhex(secret)).hexdigest()
        assert [e["data"]["draw_commitment"] for e in seen.events] == [commitment]
        assert winner["draw_commitment"] == commitment
        for replica in (a, b):
            shown = (await replica.http.get(f"/v1/campaigns/{cid}")).json()
            assert shown["draw_commitment"] == commitment


async def test_a_draw_that_started_before_commitments_still_ends_and_verifies_under_v1(
    services, nc
):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        running, http = s["campaigns"], s["campaigns"].http
        cid = (await create_and_start(http, **DRAW))["campaign_id"]
        # As a campaign started by the version before commitments left its document.
        await running.store.campaigns.update_one(
            {"_id": cid}, {"$unset": {"draw_secret": "", "draw_commitment": ""}}
        )
        await members_with_posts(nc, running, cid, {"m_anna": 2, "m_boris": 1})
        campaign = (await http.post(f"/v1/campaigns/{cid}/end")).json()
        assert campaign["result"]["draw"]["procedure"] == "sarafan-draw-v1"
        assert campaign["draw_commitment"] is None and campaign["result"]["draw"]["secret"] is None
        code, out = verify(cid, serving(campaign))
        assert code == 0 and "procedure sarafan-draw-v1" in out and "MATCH" in out, out
