"""No input breaks the campaigns service, a broken stored document stops nothing, erasure
leaves only anonymous ids."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.clock import epoch_ms as to_ms
from shared.events import MemberLeft, PostCreated, utcnow
from shared.query import order_key
from tests.helpers import wait_until
from tests.integration.test_campaigns_support import (
    campaign_body,
    create_and_start,
    declare_streams,
    member_joined,
    publish,
    wait_known,
    wait_points,
)

JSON = {"Content-Type": "application/json"}


def raw(body: dict[str, Any], **literal: str) -> str:
    """The JSON text of `body` with some fields set to literal JSON text (`1e999`, `NaN`)
    that Python's encoder would not write."""
    marked = {**body, **{name: f"@@{name}@@" for name in literal}}
    text = json.dumps(marked)
    for name, value in literal.items():
        text = text.replace(f'"@@{name}@@"', value)
    return text


async def stored_campaigns(store: Any) -> int:
    return await store.campaigns.count_documents({})


async def test_a_time_outside_2000_to_2100_is_refused_and_nothing_is_stored(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http, store = s["campaigns"].http, s["campaigns"].store
        cases = [
            # Year 0 once the offset is applied: stored before, then every read failed.
            {"starts_at": "0001-01-01T00:00:00+14:00"},
            {"ends_at": "10000-01-01T00:00:00Z"},
            {"ends_at": "9999-12-31T23:59:59-14:00"},
            {"starts_at": "1999-12-31T23:59:59Z"},
            {"ends_at": "2100-01-02T00:00:00Z"},
        ]
        for over in cases:
            r = await http.post("/v1/campaigns", json=campaign_body(**over))
            assert r.status_code == 422, (over, r.text)
            assert r.json()["error"]["code"] == "invalid_request", r.text
        assert await stored_campaigns(store) == 0
        listed = await http.get("/v1/campaigns")
        assert listed.status_code == 200 and listed.json()["items"] == []


async def test_numbers_that_are_not_finite_or_are_absurd_are_refused(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http, store = s["campaigns"].http, s["campaigns"].store
        body = campaign_body()
        texts = [
            raw(body, scoring='{"referral-made": NaN}'),
            raw(body, scoring='{"referral-made": Infinity}'),
            raw(body, scoring='{"referral-made": -Infinity}'),
            raw(body, scoring='{"referral-made": 1e999}'),
            raw(body, scoring='{"referral-made": 1e30}'),
            raw(body, scoring='{"referral-made": -5}'),
            raw(body, milestones="[1e30]"),
            raw(body, milestones="[100000000000000000000000000000]"),
            raw(body, milestones="[NaN]"),
            raw(body, winners="1e30"),
            raw(body, winners="100000000000000000000000000000"),
            raw(body, winners="1001"),
            raw(body, winners="true"),
            raw(body, winners='"3"'),
            raw(body, milestones=json.dumps(list(range(1, 22)))),
            raw(body, scoring=json.dumps({f"type-{i}": 1 for i in range(21)})),
        ]
        for text in texts:
            r = await http.post("/v1/campaigns", content=text, headers=JSON)
            assert r.status_code == 422, (text[:300], r.text)
            assert set(r.json()["error"]) >= {"code", "message"}
        assert await stored_campaigns(store) == 0


async def test_oversized_lists_texts_and_control_characters_are_refused(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http, store = s["campaigns"].http, s["campaigns"].store
        cases: dict[str, dict[str, Any]] = {
            # 60 regions of 15 KB: under the body limit, over what a region may be; with 100
            # of them the campaign-started event was too big for NATS and never went out.
            "huge regions": campaign_body(audience={"regions": ["r" * 15_000] * 60, "roles": []}),
            "too many regions": campaign_body(
                audience={"regions": [f"region-{i}" for i in range(101)], "roles": []}
            ),
            "too many roles": campaign_body(audience={"regions": [], "roles": ["staff"] * 11}),
            "long name": campaign_body(name="n" * 201),
            "empty name": campaign_body(name="   "),
            "long announcement": campaign_body(announcement={"ru": "р" * 2001, "en": "Hi"}),
            "control in announcement": campaign_body(announcement={"ru": "a\x00b", "en": "Hi"}),
            "long scoring key": campaign_body(scoring={"x" * 51: 1}),
            "unknown field": campaign_body(colour="red"),
        }
        for control in ("\r", "\n", "\v", "\x85", "\u2028", "\x00", "\u202e"):
            cases[f"name with {control!r}"] = campaign_body(name=f"Bring{control}a friend")
            cases[f"region with {control!r}"] = campaign_body(
                audience={"regions": [f"mos{control}cow"], "roles": []}
            )
        for case, body in cases.items():
            r = await http.post("/v1/campaigns", json=body)
            assert r.status_code == 422, (case, r.text[:300])
            assert len(r.content) < 10_000, (case, "the error echoes the input")
        assert await stored_campaigns(store) == 0

        # Line breaks are fine in an announcement (it is a few paragraphs).
        fine = campaign_body(announcement={"ru": "Привет!\nПриведи друга.", "en": "Hi!\n\nGo."})
        r = await http.post("/v1/campaigns", json=fine)
        assert r.status_code == 201, r.text
        assert r.json()["announcement"]["en"] == "Hi!\n\nGo."


async def test_tampered_cursors_are_refused_on_the_list_and_the_leaderboard(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http = s["campaigns"].http
        cid = (await create_and_start(http))["campaign_id"]
        tampered = ["²:x", "1" * 30, "1" * 5000, "-1", "1.5", " 1", "%00", "MDAwMA"]
        for cursor in tampered:
            for path in ("/v1/campaigns", f"/v1/campaigns/{cid}/leaderboard"):
                r = await http.get(path, params={"cursor": cursor})
                assert r.status_code == 422, (path, cursor[:40], r.text[:300])
                assert r.json()["error"]["code"] == "invalid_cursor", r.text[:300]
        # What the service hands out still works.
        assert (await http.get(f"/v1/campaigns/{cid}/leaderboard", params={"cursor": "50"})).json()[
            "items"
        ] == []
        long_id = await http.get(f"/v1/campaigns/{'c' * 5000}")
        assert long_id.status_code == 422 and len(long_id.content) < 2000


def broken_campaigns(now_ms: int) -> list[dict[str, Any]]:
    """Campaign documents no current request can create, as earlier versions or a hand
    edit left them: each is due (to start or to end) and listed."""
    year_zero = to_ms(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))))
    common = {"kind": "contest", "created_ms": now_ms, "version": 1}
    docs = [
        # The review's case: stored with a start that reads as year 0.
        {
            "_id": "c_year_zero",
            **common,
            "name": "year zero",
            "status": "scheduled",
            "audience": {"regions": [], "roles": []},
            "scoring": {"post-created": 1},
            "milestones": [],
            "winners": 1,
            "announcement": {"ru": "x", "en": "x"},
            "starts_ms": year_zero,
            "ends_ms": now_ms + 86_400_000,
            "window_start_ms": year_zero,
            "window_end_ms": now_ms + 86_400_000,
        },
        # Half a document: due to start, most fields missing.
        {"_id": "c_half", **common, "status": "scheduled", "window_start_ms": now_ms - 1000},
        # Active and over, with a result nobody can compute (scoring is not a mapping).
        {
            "_id": "c_bad_end",
            **common,
            "status": "active",
            "scoring": "lots",
            "window_start_ms": now_ms - 10_000,
            "window_end_ms": now_ms - 5000,
        },
    ]
    return [{**d, "order_key": order_key(now_ms + i, d["_id"])} for i, d in enumerate(docs)]


async def test_a_broken_stored_campaign_does_not_stop_others_from_starting_and_ending(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services(
        "campaigns",
        SARAFAN_CAMPAIGNS_SCHEDULER_SECONDS=0.2,
        SARAFAN_CAMPAIGNS_END_GRACE_SECONDS=0,
    ) as s:
        service = s["campaigns"]
        http, store = service.http, service.store
        await store.campaigns.insert_many(broken_campaigns(to_ms(utcnow())))
        now = utcnow()
        r = await http.post(
            "/v1/campaigns",
            json=campaign_body(
                starts_at=(now - timedelta(seconds=1)).isoformat(),
                ends_at=(now + timedelta(seconds=2)).isoformat(),
            ),
        )
        assert r.status_code == 201, r.text
        cid = r.json()["campaign_id"]

        async def ended() -> bool:
            return (await http.get(f"/v1/campaigns/{cid}")).json()["status"] == "ended"

        await wait_until(ended, timeout=15, message="the good campaign never started and ended")
        skipped = service.runtime.skipped
        assert skipped.count("campaigns") >= 3
        # The broken ones stay as they were: nothing half done to them.
        left = {d["_id"]: d["status"] async for d in store.campaigns.find({"_id": {"$ne": cid}})}
        assert left == {"c_year_zero": "scheduled", "c_half": "scheduled", "c_bad_end": "active"}


async def test_lists_skip_a_broken_stored_campaign_or_standing_and_count_it(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns", SARAFAN_CAMPAIGNS_SCHEDULER_SECONDS=60) as s:
        service = s["campaigns"]
        http, store = service.http, service.store
        cid = (await create_and_start(http, name="the good one"))["campaign_id"]
        await store.campaigns.insert_many(broken_campaigns(to_ms(utcnow()) + 1000))

        listed = await http.get("/v1/campaigns")
        assert listed.status_code == 200, listed.text
        assert [c["campaign_id"] for c in listed.json()["items"]] == [cid]
        # Paging over them: pages may come out short, never fail, and reach the good one.
        seen, cursor = [], None
        for _ in range(10):
            page = (await http.get("/v1/campaigns", params={"limit": 1, "cursor": cursor})).json()
            seen += [c["campaign_id"] for c in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [cid]
        skipped = service.runtime.skipped
        assert skipped.count("campaigns") >= 3

        good, bad = "m_good", "m_bad"
        await store.standings.insert_many(
            [
                {
                    "_id": f"{cid}:{bad}",
                    "campaign_id": cid,
                    "member_id": bad,
                    "points": "a lot",
                    "rank_key": "0",  # sorts first
                    "version": 1,
                },
                {
                    "_id": f"{cid}:{good}",
                    "campaign_id": cid,
                    "member_id": good,
                    "points": 5.0,
                    "reached_ms": to_ms(utcnow()),
                    "rank_key": "1",
                    "applied": {},
                    "milestones": {},
                    "version": 1,
                },
            ]
        )
        board = await http.get(f"/v1/campaigns/{cid}/leaderboard")
        assert board.status_code == 200, board.text
        assert [(i["rank"], i["member_id"]) for i in board.json()["items"]] == [(2, good)]
        assert skipped.count("standings") >= 1
        # Ending it leaves the unreadable standing out of the winners instead of failing.
        ended = await http.post(f"/v1/campaigns/{cid}/end")
        assert ended.status_code == 200, ended.text
        assert [w["member_id"] for w in ended.json()["result"]["winners"]] == [good]


async def test_a_broken_open_campaign_does_not_stop_the_scoring_of_others(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        service = s["campaigns"]
        http, store = service.http, service.store
        now_ms = to_ms(utcnow())
        await store.campaigns.insert_one(
            {
                "_id": "c_bad_audience",
                "status": "active",
                "audience": "everyone",
                "scoring": {"post-created": 1},
                "window_start_ms": now_ms - 60_000,
                "window_end_ms": now_ms + 86_400_000,
                "order_key": order_key(now_ms, "c_bad_audience"),
            }
        )
        cid = (
            await create_and_start(
                http, kind="contest", scoring={"post-created": 3}, milestones=[], audience={}
            )
        )["campaign_id"]
        member = member_joined()
        await publish(nc, member)
        await wait_known(store, member.member_id)
        await publish(nc, post_by(member.member_id))
        await wait_points(http, cid, {member.member_id: 3})
        assert service.runtime.skipped.count("campaigns") >= 1


def post_by(author_id: str) -> PostCreated:
    return PostCreated(
        post_id=f"p_{uuid.uuid4().hex[:8]}",
        author_id=author_id,
        kind="post",
        title="Cleanup report",
        created_at=utcnow(),
    )


async def test_erasure_leaves_only_anonymous_ids_in_the_campaigns_database(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    name, email = "Vera Victimova", "vera.victimova@example.org"
    async with services("campaigns") as s:
        service = s["campaigns"]
        http, store = service.http, service.store
        cid = (
            await create_and_start(
                http, kind="contest", scoring={"post-created": 2}, milestones=[2], audience={}
            )
        )["campaign_id"]
        vera = member_joined(display_name=name, contacts={"email": email})
        await publish(nc, vera)
        await wait_known(store, vera.member_id)
        await publish(nc, post_by(vera.member_id))
        await wait_points(http, cid, {vera.member_id: 2})
        board = (await http.get(f"/v1/campaigns/{cid}/leaderboard")).json()["items"]
        assert board[0]["display_name"] == name

        # An Idempotency-Key record about her, as the kernel files a kept answer naming her
        # (only 2xx answers are kept, and no campaigns route answers 2xx about one member).
        await store.idempotency.insert_one(
            {
                "_id": f"k-{uuid.uuid4().hex}",
                "member_id": vera.member_id,
                "body": json.dumps({"member_id": vera.member_id, "display_name": name}),
            }
        )
        assert await store.idempotency.count_documents({"member_id": vera.member_id}) == 1

        await publish(nc, MemberLeft(member_id=vera.member_id, erase=True, left_at=utcnow()))

        async def forgotten() -> bool:
            records = await store.idempotency.count_documents({"member_id": vera.member_id})
            member = await store.member(vera.member_id)
            return records == 0 and member is not None and member.get("status") == "erased"

        await wait_until(forgotten, timeout=15, message="the erasure never reached campaigns")
        board = (await http.get(f"/v1/campaigns/{cid}/leaderboard")).json()["items"]
        assert [(i["member_id"], i["display_name"]) for i in board] == [(vera.member_id, None)]
        ended = await http.post(f"/v1/campaigns/{cid}/end")
        assert ended.status_code == 200
        db = store.campaigns.database
        for collection in await db.list_collection_names():
            async for doc in db[collection].find({}):
                text = json.dumps(doc, default=str)
                assert name not in text and email not in text, (collection, text[:300])
                assert "Vera" not in text and "victimova" not in text.lower(), collection


async def test_a_broken_old_campaign_does_not_stop_the_others_getting_their_sort_keys(services, nc):
    await declare_streams(nc, "MEMBERS", "ENGAGEMENT")
    async with services("campaigns") as s:
        http, store = s["campaigns"].http, s["campaigns"].store
        good = await create_and_start(http, name="old but fine")
        # As versions before the sort keys left them: no order_key; one with a bad time.
        await store.campaigns.update_one(
            {"_id": good["campaign_id"]}, {"$unset": {"order_key": ""}}
        )
        await store.campaigns.insert_one({"_id": "c_bad_time", "created_ms": "yesterday"})
        await store.backfill_keys()
        listed = (await http.get("/v1/campaigns")).json()["items"]
        assert [c["campaign_id"] for c in listed] == [good["campaign_id"]]
