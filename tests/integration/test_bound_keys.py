"""A key bound to a member acts as that member on every write and reads only that member's own
resources; an unbound key acts for any member and says so in `GET /v1/keys`."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.conftest import join_body
from tests.integration.test_access_support import bearer, known_everywhere
from tests.integration.test_engagement_support import join

HOURS = {"hours": 2.0, "activity": "food bank", "date": "2026-11-20"}
APP_SCOPES = ["engagement:write", "engagement:read", "notifier:read", "notifier:write"]


async def _bound_key(s: dict[str, Any], member_id: str, scopes: list[str]) -> dict[str, str]:
    r = await s["members"].http.post(
        "/v1/keys", json={"name": "own app", "scopes": scopes, "member_id": member_id}
    )
    assert r.status_code == 201, r.text
    assert (r.json()["member_id"], r.json()["acts_for"]) == (member_id, f"member {member_id}")
    await known_everywhere(s, [r.json()["key_id"]])
    return bearer(r.json()["token"])


def _refused(r: httpx.Response, bound: str) -> None:
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "forbidden" and bound in error["message"], error
    assert error["details"]["bound_member_id"] == bound


async def test_a_bound_key_writes_as_its_member_and_is_refused_as_another(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        anna, boris = await join(members, http), await join(members, http)
        own = await _bound_key(s, anna, APP_SCOPES)

        r = await http.post("/v1/posts", json={"author_id": boris, "title": "x"}, headers=own)
        _refused(r, anna)
        r = await http.post("/v1/posts", json={"author_id": anna, "title": "Mine"}, headers=own)
        assert r.status_code == 201 and r.json()["author_id"] == anna, r.text
        question = await http.post(
            "/v1/posts", json={"author_id": boris, "kind": "question", "title": "How?"}
        )
        qid = question.json()["post_id"]

        comment = {"author_id": boris, "body": "as Boris"}
        _refused(await http.post(f"/v1/posts/{qid}/comments", json=comment, headers=own), anna)
        comment = {"author_id": anna, "body": "like this"}
        answer = await http.post(f"/v1/posts/{qid}/comments", json=comment, headers=own)
        assert answer.status_code == 201, answer.text

        reaction = {"member_id": boris, "reaction": "thanks"}
        _refused(await http.post(f"/v1/posts/{qid}/reactions", json=reaction, headers=own), anna)
        reaction = {"member_id": anna, "reaction": "thanks"}
        r = await http.post(f"/v1/posts/{qid}/reactions", json=reaction, headers=own)
        assert r.status_code == 201, r.text

        # Accepting an answer is the asker's (Boris's): Anna's key cannot do it in his name.
        accept = {"comment_id": answer.json()["comment_id"], "by": boris}
        _refused(await http.post(f"/v1/posts/{qid}/accept", json=accept, headers=own), anna)

        r = await http.post("/v1/hours", json={"member_id": boris, **HOURS}, headers=own)
        _refused(r, anna)
        r = await http.post("/v1/hours", json={"member_id": anna, **HOURS}, headers=own)
        assert r.status_code == 201, r.text

        # Reads of one member's own records: hers only.
        assert (await http.get(f"/v1/members/{anna}/hours", headers=own)).status_code == 200
        assert (await http.get(f"/v1/members/{anna}/engagement", headers=own)).status_code == 200
        _refused(await http.get(f"/v1/members/{boris}/hours", headers=own), anna)
        _refused(await http.get(f"/v1/members/{boris}/engagement", headers=own), anna)
        # Listings stay governed by scopes.
        assert (await http.get("/v1/leaderboard", headers=own)).status_code == 200


async def test_a_bound_coordinator_key_decides_only_in_its_own_name(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        volunteer = await join(members, http)
        olga = await join(members, http, roles=["volunteer", "coordinator"])
        ivan = await join(members, http, roles=["volunteer", "coordinator"])
        entry = (await http.post("/v1/hours", json={"member_id": volunteer, **HOURS})).json()
        approve = f"/v1/hours/{entry['entry_id']}/approve"
        olgas = await _bound_key(s, olga, ["hours:decide"])

        _refused(await http.post(approve, json={"by": ivan}, headers=olgas), olga)
        _refused(await http.post(f"{approve[:-7]}reject", json={"by": ivan}, headers=olgas), olga)
        assert (await http.get(f"/v1/members/{volunteer}/hours")).json()["items"][0][
            "status"
        ] == "pending"

        r = await http.post(approve, json={"by": olga}, headers=olgas)
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["decided_by"]) == ("approved", olga)


async def test_a_bound_key_that_is_not_a_coordinator_still_cannot_decide(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        volunteer, other = await join(members, http), await join(members, http)
        entry = (await http.post("/v1/hours", json={"member_id": other, **HOURS})).json()
        own = await _bound_key(s, volunteer, ["hours:decide"])
        r = await http.post(
            f"/v1/hours/{entry['entry_id']}/approve", json={"by": volunteer}, headers=own
        )
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
        assert "bound" not in r.json()["error"]["message"]  # the role rule, not the binding


async def test_a_bound_key_reads_and_sets_only_its_members_inbox_and_preferences(services):
    async with services("members", "engagement", "notifier") as s:
        members, notifier = s["members"].http, s["notifier"].http
        anna = await join(members, s["engagement"].http)
        boris = await join(members, s["engagement"].http)
        own = await _bound_key(s, anna, APP_SCOPES)

        _refused(await notifier.get(f"/v1/members/{boris}/inbox", headers=own), anna)
        assert (await notifier.get(f"/v1/members/{anna}/inbox", headers=own)).status_code == 200
        _refused(await notifier.get(f"/v1/members/{boris}/preferences", headers=own), anna)
        wanted = {"channels": ["email"]}
        r = await notifier.put(f"/v1/members/{boris}/preferences", json=wanted, headers=own)
        _refused(r, anna)


async def test_a_bound_key_changes_reads_and_leaves_as_its_member_only_and_makes_no_members(
    services,
):
    async with services("members") as s:
        http = s["members"].http
        anna = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        boris = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        own = await _bound_key(s, anna, ["members:read", "members:write", "members:join"])

        _refused(await http.get(f"/v1/members/{boris}", headers=own), anna)
        _refused(await http.get(f"/v1/members/{boris}/referrals", headers=own), anna)
        _refused(await http.patch(f"/v1/members/{boris}", json={"region": "x"}, headers=own), anna)
        _refused(await http.delete(f"/v1/members/{boris}", headers=own), anna)
        _refused(await http.post("/v1/members", json=join_body(), headers=own), anna)
        csv = {"Content-Type": "text/csv", **own}
        r = await http.post("/v1/members/import", content=b"email\na@b.org\n", headers=csv)
        _refused(r, anna)
        assert (await http.get(f"/v1/members/{boris}")).json()["region"] == "moscow"

        assert (await http.get(f"/v1/members/{anna}", headers=own)).status_code == 200
        r = await http.patch(f"/v1/members/{anna}", json={"region": "kazan"}, headers=own)
        assert r.status_code == 200 and r.json()["region"] == "kazan", r.text
        assert (await http.delete(f"/v1/members/{anna}", headers=own)).status_code == 204


async def test_a_member_who_leaves_takes_their_bound_keys_with_them(services):
    async with services("members") as s:
        http = s["members"].http
        anna = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        own = await _bound_key(s, anna, ["members:read", "members:write"])
        other = await http.post("/v1/keys", json={"name": "crm", "scopes": ["members:read"]})
        assert (await http.delete(f"/v1/members/{anna}")).status_code == 204
        keys = {k["key_id"]: k for k in (await http.get("/v1/keys")).json()["items"]}
        assert [k["status"] for k in keys.values() if k["member_id"] == anna] == ["revoked"]
        assert keys[other.json()["key_id"]]["status"] == "active"
        r = await http.get(f"/v1/members/{anna}", headers=own)
        assert r.status_code == 403 and "invalid API key" in r.json()["error"]["message"], r.text


async def test_keys_list_shows_who_each_key_acts_for_and_its_rate(services):
    async with services("members", SARAFAN_KEY_RATE_PER_MINUTE=90) as s:
        http = s["members"].http
        anna = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        bound = await http.post(
            "/v1/keys",
            json={
                "name": "anna's app",
                "scopes": ["engagement:write"],
                "member_id": anna,
                "rate_per_minute": 10,
            },
        )
        crm = await http.post("/v1/keys", json={"name": "crm", "scopes": ["members:write"]})
        assert bound.status_code == crm.status_code == 201
        items = {k["name"]: k for k in (await http.get("/v1/keys")).json()["items"]}
        assert {
            k: (v["member_id"], v["acts_for"], v["rate_per_minute"], v["rate_from"])
            for k, v in items.items()
        } == {
            "anna's app": (anna, f"member {anna}", 10, "key"),
            "crm": (None, "any member", 90, "default"),
        }


async def test_a_key_binds_only_to_an_active_member_and_never_with_admin(services):
    async with services("members") as s:
        http = s["members"].http
        anna = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        r = await http.post("/v1/keys", json={"name": "x", "scopes": ["admin"], "member_id": anna})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "bound_admin")
        r = await http.post(
            "/v1/keys", json={"name": "x", "scopes": ["members:read"], "member_id": "nobody"}
        )
        assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_member")
        r = await http.post(
            "/v1/keys", json={"name": "x", "scopes": ["members:read"], "rate_per_minute": 0}
        )
        assert r.status_code == 422
        assert (await http.get("/v1/keys")).json()["items"] == []
