"""Bounds at the edge of the engagement service: every body, query and cursor a client can send
outside them is a 422 in the one error shape, and nothing is stored or published for it."""

from __future__ import annotations

import json
from typing import Any

import httpx

from shared.query import encode_cursor
from tests.integration.test_engagement_support import join

#: Characters a one-line text (a title, a tag, a reaction, an activity) refuses: each has broken
#: something downstream (an email header, a log line, how a name displays).
LINE_BREAKERS = ["\r", "\n", "\x0b", "\x85", "\u2028", "\x00", "\u202e"]
#: Cursors a tampering client sends: not ASCII, 30 and 5,000 digits, not base64, base64 of junk.
TAMPERED_CURSORS = ["²:x", "9" * 30, "9" * 5000, "!!!", encode_cursor("not-a-key"), "%00"]


def assert_invalid(r: httpx.Response, code: str = "invalid_request") -> None:
    assert r.status_code == 422, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str)
    assert len(r.content) < 10_000  # the message names the field; it never echoes the input


async def post_count(store: Any) -> int:
    return len(await store.posts.find({}, {"_id": 1}).to_list(None))


async def test_posts_comments_reactions_and_accepts_outside_their_bounds_are_422(services):
    async with services("members", "engagement") as s:
        members, http, store = s["members"].http, s["engagement"].http, s["engagement"].store
        author = await join(members, http)
        ok = {"author_id": author, "title": "Saturday", "body": "line one\nline two\ttabbed"}
        r = await http.post("/v1/posts", json={**ok, "tags": ["Park", "", "  "]})
        assert r.status_code == 201, r.text
        pid = r.json()["post_id"]
        assert r.json()["tags"] == ["park"]  # an empty tag is dropped, as it always was
        await http.post(f"/v1/posts/{pid}/comments", json={"author_id": author, "body": "x"})
        stored = await post_count(store)

        bad_posts: list[dict[str, Any]] = [
            {"title": "t" * 201},
            {"title": ""},
            {"title": None},
            {"body": "b" * 20_001},
            {"body": "nul \x00 inside"},
            {"tags": ["t"] * 21},
            {"tags": ["t" * 51]},
            {"tags": [7]},
            {"author_id": "a" * 101},
            {"author_id": "not an id"},
            {"kind": "poem"},
            {"unknown": "field"},
        ] + [{"title": f"Vera{c}Bcc: all"} for c in LINE_BREAKERS]
        bad_posts += [{"tags": [f"a{c}b"]} for c in LINE_BREAKERS]
        for bad in bad_posts:
            assert_invalid(await http.post("/v1/posts", json={**ok, **bad}))

        comments = f"/v1/posts/{pid}/comments"
        for bad in [{"body": "c" * 10_001}, {"body": ""}, {"body": "\x00"}, {"author_id": ""}]:
            body = {"author_id": author, "body": "x", **bad}
            assert_invalid(await http.post(comments, json=body))
        reactions = f"/v1/posts/{pid}/reactions"
        for reaction in ["r" * 33, "two words", "", *[f"a{c}b" for c in LINE_BREAKERS]]:
            body = {"member_id": author, "reaction": reaction}
            assert_invalid(await http.post(reactions, json=body))
        accept = f"/v1/posts/{pid}/accept"
        for bad in [{"comment_id": "c " * 10}, {"by": "b" * 101}, {"comment_id": 5}]:
            assert_invalid(await http.post(accept, json={"comment_id": "c", "by": author, **bad}))

        # A body too big for any field is refused before it is read in full.
        huge = json.dumps({**ok, "body": "x" * (2 * 1024 * 1024)})
        r = await http.post("/v1/posts", content=huge, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

        assert await post_count(store) == stored  # nothing of the refused posts was kept


async def test_hours_are_a_real_number_of_one_day_on_a_day_of_the_platforms_lifetime(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        volunteer = await join(members, http)
        staff = await join(members, http, roles=["staff"])
        ok = {"member_id": volunteer, "hours": 2, "activity": "food bank", "date": "2026-11-20"}
        r = await http.post("/v1/hours", json=ok)  # a whole number of hours is a number too
        assert (r.status_code, r.json()["hours"]) == (201, 2.0)
        assert (await http.post("/v1/hours", json={**ok, "hours": 24})).status_code == 201
        entry = r.json()["entry_id"]

        for bad in [
            {"hours": True},
            {"hours": "3"},
            {"hours": None},
            {"hours": 0},
            {"hours": -1},
            {"hours": 24.5},
            {"date": "0001-01-01"},
            {"date": "1999-12-31"},
            {"date": "10000-01-01"},
            {"date": "yesterday"},
            {"activity": "a" * 201},
            {"activity": "food\r\nbank"},
            {"note": "n" * 2001},
            {"note": "\x00"},
            {"member_id": "x" * 101},
        ]:
            assert_invalid(await http.post("/v1/hours", json={**ok, **bad}))
        # JSON has no NaN or infinity; Python's parser reads them (and 1e999 as infinity).
        for number in ["NaN", "Infinity", "-Infinity", "1e999"]:
            raw = json.dumps({**ok, "hours": 0}).replace('"hours": 0', f'"hours": {number}')
            r = await http.post(
                "/v1/hours", content=raw, headers={"Content-Type": "application/json"}
            )
            assert_invalid(r)
        listing = (await http.get(f"/v1/members/{volunteer}/hours")).json()
        assert len(listing["items"]) == 2

        approve = f"/v1/hours/{entry}/approve"
        for bad in [{"reason": "r" * 2001}, {"reason": "\x00"}, {"by": ""}, {"by": True}]:
            assert_invalid(await http.post(approve, json={"by": staff, **bad}))
        r = await http.post(approve, json={"by": staff, "reason": "thanks,\nwell done"})
        assert r.status_code == 200, r.text


async def test_tampered_cursors_are_422_on_comments_hours_and_segments(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        member = await join(members, http)
        pid = (await http.post("/v1/posts", json={"author_id": member, "title": "t"})).json()[
            "post_id"
        ]
        listings = [
            f"/v1/posts/{pid}/comments",
            f"/v1/members/{member}/hours",
            "/v1/segments/loyal",
            "/v1/segments/new-promising",
        ]
        for path in listings:
            assert (await http.get(path)).status_code == 200
            for cursor in TAMPERED_CURSORS:
                r = await http.get(path, params={"cursor": cursor})
                assert_invalid(r, "invalid_cursor")


async def test_query_parameters_outside_their_bounds_are_422(services):
    async with services("members", "engagement") as s:
        http = s["engagement"].http
        assert (await http.get("/v1/leaderboard", params={"region": "r" * 100})).status_code == 200
        for params in [
            {"region": "r" * 101},
            {"limit": 0},
            {"limit": 101},
            {"limit": "ten"},
            {"period": "1y"},
        ]:
            assert_invalid(await http.get("/v1/leaderboard", params=params))
        for params in [{"limit": 501}, {"limit": -1}]:
            assert_invalid(await http.get("/v1/segments/loyal", params=params))
        r = await http.get("/v1/members/someone/hours", params={"status": "maybe"})
        assert_invalid(r)
