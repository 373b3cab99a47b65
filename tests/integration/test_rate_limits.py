"""Each API key's writes are limited (its own rate_per_minute, else the default): beyond it 429
in the one error shape with Retry-After; reads and the bootstrap key are not limited."""

from __future__ import annotations

import asyncio

from tests.integration.conftest import join_body
from tests.integration.test_access_support import bearer, known_everywhere


async def _key(http, **body) -> str:
    r = await http.post("/v1/keys", json={"name": "sign-up page", **body})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


async def test_twenty_concurrent_joins_with_a_key_limited_to_5_a_minute_give_5_joins_15_429(
    services,
):
    async with services("members") as s:
        http = s["members"].http
        made = await http.post(
            "/v1/keys",
            json={"name": "sign-up page", "scopes": ["members:join"], "rate_per_minute": 5},
        )
        assert made.status_code == 201 and made.json()["rate_per_minute"] == 5
        page = bearer(made.json()["token"])

        answers = await asyncio.gather(
            *(http.post("/v1/members", json=join_body(), headers=page) for _ in range(20))
        )
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [201] * 5 + [429] * 15
        for r in answers:
            if r.status_code == 429:
                error = r.json()["error"]
                assert error["code"] == "rate_limited"
                assert error["details"]["rate_per_minute"] == 5
                # A token every 12 s: the next one is at most 12 s away.
                assert 1 <= int(r.headers["Retry-After"]) <= 12
                assert error["details"]["retry_after_seconds"] == int(r.headers["Retry-After"])
        assert len((await http.get("/v1/members")).json()["items"]) == 5
        metrics = (await http.get("/metrics")).text
        assert (
            'sarafan_http_requests_total{route="/v1/members",service="members",status="429"} 15.0'
            in metrics
        )


async def test_a_key_without_a_rate_gets_the_default_and_the_bootstrap_key_none(services):
    async with services("members", SARAFAN_KEY_RATE_PER_MINUTE=3) as s:
        http = s["members"].http
        page = bearer(await _key(http, scopes=["members:join", "members:read"]))
        listed = (await http.get("/v1/keys")).json()["items"][0]
        assert (listed["rate_per_minute"], listed["rate_from"]) == (3, "default")

        codes = [(await http.post("/v1/members", json=join_body(), headers=page)).status_code]
        codes += [(await http.post("/v1/members", json=join_body(), headers=page)).status_code]
        codes += [(await http.post("/v1/members", json=join_body(), headers=page)).status_code]
        codes += [(await http.post("/v1/members", json=join_body(), headers=page)).status_code]
        assert codes == [201, 201, 201, 429]
        # Reads are not limited.
        for _ in range(10):
            assert (await http.get("/v1/members", headers=page)).status_code == 200
        # The operator's bootstrap key is not limited (tests, `sarafan demo`, benchmarks).
        boot = await asyncio.gather(
            *(http.post("/v1/members", json=join_body()) for _ in range(10))
        )
        assert {r.status_code for r in boot} == {201}


async def test_a_429_is_not_kept_and_the_retry_after_refill_runs(services):
    async with services("members") as s:
        http, limits = s["members"].http, s["members"].runtime.limits
        now = [1000.0]
        limits.clock = lambda: now[0]
        page = bearer(await _key(http, scopes=["members:join"], rate_per_minute=1))
        key = {"Idempotency-Key": "join-busy"}
        assert (await http.post("/v1/members", json=join_body(), headers=page)).status_code == 201
        body = join_body()
        busy = await http.post("/v1/members", json=body, headers={**page, **key})
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "60"

        now[0] += 60  # a minute later the bucket holds a token again
        r = await http.post("/v1/members", json=body, headers={**page, **key})
        assert r.status_code == 201, r.text
        assert "Idempotent-Replayed" not in r.headers


async def test_every_service_limits_the_writes_of_a_key_and_not_its_reads(services):
    async with services("members", "engagement", "notifier") as s:
        made = await s["members"].http.post(
            "/v1/keys",
            json={
                "name": "app",
                "scopes": ["engagement:write", "engagement:read", "notifier:write"],
                "rate_per_minute": 2,
            },
        )
        token, key_id = made.json()["token"], made.json()["key_id"]
        await known_everywhere(s, [key_id])
        app = bearer(token)
        engagement, notifier = s["engagement"].http, s["notifier"].http
        # Writes refused for their body still take a token: the third is 429 before any check.
        posts = [
            (await engagement.post("/v1/posts", json={}, headers=app)).status_code for _ in range(3)
        ]
        assert posts == [422, 422, 429]
        prefs = [
            (await notifier.put("/v1/members/x/preferences", json={}, headers=app)).status_code
            for _ in range(3)
        ]
        assert prefs == [404, 404, 429]  # no such member x, then over the rate
        assert (await engagement.get("/v1/leaderboard", headers=app)).status_code == 200
