"""API keys: made by the admin endpoint, shown once, kept hashed in the bucket every service
watches, refused everywhere within seconds once revoked or expired; events name their key."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from shared import keys
from shared.events import utcnow
from tests.helpers import wait_until
from tests.integration.conftest import Running, join_body
from tests.integration.test_access_support import ALL_SERVICES, bearer, put_keys

#: One read per service, each needing the read scope of that service.
READS = {
    "members": ("/v1/members", "members:read"),
    "engagement": ("/v1/leaderboard", "engagement:read"),
    "campaigns": ("/v1/campaigns", "campaigns:read"),
    "notifier": ("/v1/notifications", "notifier:read"),
    "activities": ("/v1/activities", "activities:read"),
}
READ_SCOPES = [scope for _, scope in READS.values()]


async def _statuses(running: Mapping[str, Running], token: str) -> dict[str, int]:
    async def one(name: str) -> tuple[str, int]:
        path, _ = READS[name]
        return name, (await running[name].http.get(path, headers=bearer(token))).status_code

    return dict(await asyncio.gather(*(one(name) for name in running)))


async def _everywhere(running: Mapping[str, Running], token: str, status: int, what: str) -> None:
    async def all_answer() -> bool:
        return set((await _statuses(running, token)).values()) == {status}

    await wait_until(all_answer, timeout=10, message=what)


async def test_a_key_made_by_the_endpoint_works_everywhere_and_revoked_is_refused_everywhere(
    services,
):
    async with services(*ALL_SERVICES) as s:
        members = s["members"].http
        r = await members.post("/v1/keys", json={"name": "dashboard", "scopes": READ_SCOPES})
        assert r.status_code == 201, r.text
        assert r.headers["Cache-Control"] == "no-store"
        made = r.json()
        token, key_id = made["token"], made["key_id"]
        assert token.startswith(f"sk_{key_id}_")
        assert (made["status"], sorted(made["scopes"]), made["expires_at"]) == (
            "active",
            sorted(READ_SCOPES),
            None,
        )
        await _everywhere(s, token, 200, "the new key never worked on every service")

        # Shown once: the list has no token and no hash, the bucket only the token's hash.
        listed = await members.get("/v1/keys")
        assert listed.status_code == 200
        assert [k["key_id"] for k in listed.json()["items"]] == [key_id]
        assert token not in listed.text and "sha256" not in listed.text
        assert set(listed.json()["items"][0]) == set(made) - {"token"}
        (record,) = await keys.all_records(s["members"].runtime.bus.js)
        assert record.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
        assert token not in record.model_dump_json()

        # It holds read scopes only: a write is refused, naming the scope.
        r = await members.post("/v1/members", json=join_body(), headers=bearer(token))
        assert (r.status_code, r.json()["error"]["details"]["missing_scope"]) == (
            403,
            "members:join",
        )

        r = await members.delete(f"/v1/keys/{key_id}")
        assert r.status_code == 200 and r.json()["status"] == "revoked"
        revoked_at = r.json()["revoked_at"]
        await _everywhere(s, token, 403, "the revoked key still worked somewhere")
        r = await s["campaigns"].http.get("/v1/campaigns", headers=bearer(token))
        assert "invalid API key" in r.json()["error"]["message"]

        # The record stays (the audit's key ids stay explained); revoking again changes nothing.
        listed = (await members.get("/v1/keys")).json()["items"]
        assert [(k["key_id"], k["status"]) for k in listed] == [(key_id, "revoked")]
        again = await members.delete(f"/v1/keys/{key_id}")
        assert (again.status_code, again.json()["revoked_at"]) == (200, revoked_at)


async def test_keys_are_managed_by_admin_keys_only_with_clear_refusals(services):
    async with services("members") as s:
        http = s["members"].http
        made = await put_keys(s, [("crm", ["members:read", "members:write"])])
        crm = bearer(made["crm"][0])
        for method, path in (("GET", "/v1/keys"), ("POST", "/v1/keys"), ("DELETE", "/v1/keys/x")):
            r = await http.request(
                method, path, json={"name": "mine", "scopes": ["admin"]}, headers=crm
            )
            assert r.status_code == 403, (method, r.text)
            assert r.json()["error"]["details"]["missing_scope"] == "admin"

        r = await http.post("/v1/keys", json={"name": "x", "scopes": ["members:everything"]})
        assert r.status_code == 422 and "members:everything" in r.json()["error"]["message"]
        r = await http.post("/v1/keys", json={"name": "x", "scopes": []})
        assert r.status_code == 422
        past = (utcnow() - timedelta(minutes=1)).isoformat()
        r = await http.post("/v1/keys", json={"name": "x", "scopes": ["admin"], "expires_at": past})
        assert r.status_code == 422 and "future" in r.json()["error"]["message"]
        # With an Idempotency-Key a repeat makes no second key, and the token is kept nowhere:
        # the repeat says the request was done and its answer not kept.
        once = {"name": "once", "scopes": ["admin"]}
        first = await http.post("/v1/keys", json=once, headers={"Idempotency-Key": "k1"})
        assert first.status_code == 201 and first.json()["token"].startswith("sk_")
        again = await http.post("/v1/keys", json=once, headers={"Idempotency-Key": "k1"})
        assert (again.status_code, again.json()["error"]["code"]) == (409, "answer_not_kept")
        listed = (await http.get("/v1/keys")).json()["items"]
        assert [k["name"] for k in listed].count("once") == 1
        assert "sk_" not in json.dumps(
            await s["members"].runtime.db["idempotency_keys"].find({}, {"_id": 0}).to_list(None),
            default=str,
        )

        assert (await http.delete("/v1/keys/abcdefghijkl")).status_code == 404
        r = await http.delete("/v1/keys/bootstrap")
        assert (r.status_code, r.json()["error"]["code"]) == (422, "bootstrap_key")


async def test_expired_unknown_and_garbled_keys_are_refused(services):
    async with services(*ALL_SERVICES) as s:
        expired = await put_keys(
            s, [("old", READ_SCOPES)], expires_at=utcnow() - timedelta(seconds=1)
        )
        live = await put_keys(s, [("live", READ_SCOPES)])
        token, record = live["live"]
        assert set((await _statuses(s, token)).values()) == {200}
        wrong_secret = f"sk_{record.id}_{'A' * 43}"
        unknown = f"sk_{'z' * 12}_{'A' * 43}"
        for bad in (expired["old"][0], wrong_secret, unknown, "garbage", "sk_", token + "x"):
            statuses = await _statuses(s, bad)
            assert set(statuses.values()) == {403}, (bad, statuses)
        r = await s["members"].http.get("/v1/members", headers={"Authorization": "Bearer "})
        assert r.status_code == 401

        # The endpoint shows an expired key as such.
        listed = (await s["members"].http.get("/v1/keys")).json()["items"]
        assert {k["name"]: k["status"] for k in listed} == {"old": "expired", "live": "active"}


async def test_a_key_made_with_an_expiry_stops_working_when_it_passes(services):
    async with services("members", "engagement") as s:
        expires = utcnow() + timedelta(seconds=2)
        r = await s["members"].http.post(
            "/v1/keys",
            json={"name": "short", "scopes": READ_SCOPES, "expires_at": expires.isoformat()},
        )
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        await _everywhere(s, token, 200, "the key never worked")
        await _everywhere(s, token, 403, "the key kept working after its expiry")


async def test_the_events_of_a_write_name_the_key_that_made_it(services, nc):
    seen: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        seen.append(json.loads(msg.data))

    await nc.subscribe("members.>", cb=collect)
    await nc.subscribe("engagement.>", cb=collect)
    async with services("members", "engagement") as s:
        made = await put_keys(s, [("sign-up page", ["members:join"])])
        signup, record = made["sign-up page"]
        r = await s["members"].http.post("/v1/members", json=join_body(), headers=bearer(signup))
        via_key = r.json()["member_id"]
        r = await s["members"].http.post("/v1/members", json=join_body())
        via_bootstrap = r.json()["member_id"]

        def joined() -> dict[str, dict[str, Any]]:
            found = {e["subject"]: e for e in seen if e["type"] == "member-joined"}
            return found if {via_key, via_bootstrap} <= set(found) else {}

        events = await wait_until(joined, timeout=10, message="member-joined never published")
        assert events[via_key]["keyid"] == record.id
        assert events[via_bootstrap]["keyid"] == keys.BOOTSTRAP_ID

        # Another service's write names its key the same way.
        async def known() -> bool:
            path = f"/v1/members/{via_key}/engagement"
            return (await s["engagement"].http.get(path)).status_code == 200

        await wait_until(known, timeout=15)
        writer = await put_keys(s, [("posts app", ["engagement:write"])])
        token, posts_key = writer["posts app"]
        r = await s["engagement"].http.post(
            "/v1/posts",
            json={"author_id": via_key, "title": "Hello"},
            headers=bearer(token),
        )
        assert r.status_code == 201, r.text
        post_id = r.json()["post_id"]

        def created() -> list[dict[str, Any]]:
            return [
                e for e in seen if e["type"] == "post-created" and e["data"]["post_id"] == post_id
            ]

        (event,) = await wait_until(created, timeout=10, message="post-created never published")
        assert event["keyid"] == posts_key.id


async def test_keys_made_before_still_work_while_nats_is_away_but_none_can_be_managed(
    services, nats_server
):
    async with services("members") as s:
        http, bus = s["members"].http, s["members"].runtime.bus
        made = await put_keys(s, [("reader", ["members:read"])])
        reader = bearer(made["reader"][0])
        nats_server.stop()
        await wait_until(lambda: not bus.connected, timeout=10, message="NATS never went away")

        assert (await http.get("/v1/members", headers=reader)).status_code == 200
        for method, path in (
            ("POST", "/v1/keys"),
            ("GET", "/v1/keys"),
            ("DELETE", "/v1/keys/abcdefghijkl"),
        ):
            r = await http.request(method, path, json={"name": "new", "scopes": ["admin"]})
            assert (r.status_code, r.json()["error"]["code"]) == (503, "unavailable"), (
                method,
                r.text,
            )
        nats_server.start()  # so that the services stop as they would (and the fixture's stop)
        await wait_until(lambda: bus.connected, timeout=20, message="NATS never came back")
        r = await http.post("/v1/keys", json={"name": "new", "scopes": ["members:read"]})
        assert r.status_code == 201, r.text
