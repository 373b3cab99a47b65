"""HTTP conventions every service shares: auth, Idempotency-Key, error shape, ops endpoints."""

from __future__ import annotations

import json
import logging
import re

from shared.http import record_id
from shared.keys import BOOTSTRAP_ID
from shared.logs import JsonFormatter, TextFormatter
from tests.integration.conftest import TOKEN, join_body


async def test_v1_needs_a_bearer_token_401_without_403_when_wrong(services):
    async with services("members") as s:
        http = s["members"].http
        r = await http.get("/v1/members/x", headers={"Authorization": ""})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        r = await http.get("/v1/members/x", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "forbidden"
        for open_path in ("/healthz", "/readyz", "/metrics"):
            assert (await http.get(open_path, headers={"Authorization": ""})).status_code == 200


async def test_idempotency_key_repeat_returns_the_first_response_without_a_second_member(services):
    async with services("members") as s:
        http, members = s["members"].http, s["members"].store.members
        body = join_body()
        first = await http.post("/v1/members", json=body, headers={"Idempotency-Key": "k1"})
        again = await http.post("/v1/members", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert await members.count_documents({"email": body["email"]}) == 1
        other = await http.post("/v1/members", json=join_body(), headers={"Idempotency-Key": "k1"})
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        # Without the key a repeat is a new request: the duplicate email is refused.
        dup = await http.post("/v1/members", json=body)
        assert dup.status_code == 409
        assert dup.json()["error"]["code"] == "contact_taken"


async def test_bad_input_gets_422_with_a_clear_message(services):
    async with services("members") as s:
        http = s["members"].http
        r = await http.post("/v1/members", json=join_body(consent={"terms": False}))
        assert r.status_code == 422
        assert "consent" in r.json()["error"]["message"]
        r = await http.post("/v1/members", json=join_body(email=None))
        assert r.status_code == 422 and "contact" in r.json()["error"]["message"]
        r = await http.post("/v1/members", json=join_body(email="not-an-address"))
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_email"
        r = await http.post("/v1/members", json=join_body(referral_code="NOPE123"))
        assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_referral_code"


async def test_referral_join_emits_referral_made_and_own_contacts_are_refused(services):
    async with services("members") as s:
        http = s["members"].http
        referrer = (await http.post("/v1/members", json=join_body())).json()
        code = referrer["referral_code"].lower()  # codes are case-insensitive
        friend = await http.post("/v1/members", json=join_body(referral_code=code))
        assert friend.status_code == 201
        assert friend.json()["referred_by"] == referrer["member_id"]
        same = await http.post(
            "/v1/members", json=join_body(email=None, telegram="anna_smith", referral_code=code)
        )
        assert same.status_code == 201
        self_ref = await http.post(
            "/v1/members",
            json=join_body(
                email=None, telegram="anna_smith2", referral_code=same.json()["referral_code"]
            ),
        )
        assert self_ref.status_code == 201
        own = await http.post(
            "/v1/members",
            json=join_body(
                email=None, telegram="Anna_Smith", referral_code=same.json()["referral_code"]
            ),
        )
        assert own.status_code in (409, 422)
        refs = (await http.get(f"/v1/members/{referrer['member_id']}/referrals")).json()
        assert [m["member_id"] for m in refs["items"]] == [
            friend.json()["member_id"],
            same.json()["member_id"],
        ]


async def test_ops_endpoints_metrics_openapi_asyncapi(services):
    async with services("members") as s:
        http = s["members"].http
        await http.post("/v1/members", json=join_body())
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200  # served directly, no redirect to /metrics/
        assert (
            'sarafan_http_requests_total{route="/v1/members",service="members",status="201"}'
            in (metrics.text)
        )
        assert "sarafan_outbox_pending" in metrics.text
        assert (await http.get("/openapi.json")).json()["info"]["title"] == "Sarafan members"
        assert (await http.get("/docs")).status_code == 200
        asyncapi = (await http.get("/asyncapi")).json()
        assert asyncapi["asyncapi"].startswith("3.")
        assert "members.member-joined" in asyncapi["channels"]
        ready = (await http.get("/readyz")).json()
        assert ready["status"] == "ready" and all(ready["checks"].values())


async def test_a_join_whose_process_died_before_answering_returns_the_same_member_on_retry(
    services,
):
    async with services("members") as s:
        http = s["members"].http
        body = join_body()
        first = await http.post("/v1/members", json=body, headers={"Idempotency-Key": "k-crash"})
        assert first.status_code == 201
        # What a SIGKILL between the write and the answer leaves: the key still "started".
        keys = s["members"].runtime.db["idempotency_keys"]
        await keys.update_one(
            {"_id": record_id(BOOTSTRAP_ID, "/v1/members", "k-crash")},
            {"$set": {"state": "started", "started_ms": 0}, "$unset": {"body": "", "status": ""}},
        )
        again = await http.post("/v1/members", json=body, headers={"Idempotency-Key": "k-crash"})
        assert again.status_code == 201, again.text
        assert again.json()["member_id"] == first.json()["member_id"]
        assert await s["members"].store.members.count_documents({"email": body["email"]}) == 1


async def test_every_request_has_one_access_log_line_without_token_query_or_email(services, caplog):
    caplog.set_level(logging.DEBUG, logger="sarafan.access")
    async with services("members") as s:
        http = s["members"].http
        joined = await http.post("/v1/members", json=join_body(), headers={"X-Request-Id": "r-1"})
        member_id = joined.json()["member_id"]
        caplog.clear()
        found = await http.get(f"/v1/members/{member_id}?email=anna.secret@example.org")
        refused = await http.get("/v1/members", headers={"Authorization": "Bearer sk-wrong"})
        too_large = await http.post(
            "/v1/members",
            content=b"{}",
            headers={"Content-Type": "application/json", "Content-Length": str(10**9)},
        )
        probed = await http.get("/readyz")
    assert (found.status_code, refused.status_code, too_large.status_code) == (200, 403, 413)
    assert probed.status_code == 200
    lines = [r for r in caplog.records if r.name == "sarafan.access"]
    assert [(r.method, r.route, r.status) for r in lines] == [
        ("GET", "/v1/members/{member_id}", 200),
        ("GET", "/v1/members", 403),
        ("POST", "/v1/members", 413),  # refused before the routes ran: logged all the same
        ("GET", "/readyz", 200),
    ]
    read, wrong, _, probe = lines
    assert read.levelno == logging.INFO and probe.levelno == logging.DEBUG
    assert read.key_id == "bootstrap" and wrong.key_id is None
    assert read.correlation_id == found.headers["X-Correlation-Id"]
    assert isinstance(read.duration_ms, float) and read.duration_ms >= 0
    as_json = JsonFormatter().format(read)
    assert "\n" not in as_json
    fields = json.loads(as_json)
    assert {k: fields[k] for k in ("method", "route", "status", "key_id")} == {
        "method": "GET",
        "route": "/v1/members/{member_id}",
        "status": 200,
        "key_id": "bootstrap",
    }
    assert fields["correlation_id"] == read.correlation_id
    as_text = TextFormatter().format(read)
    assert re.search(r" GET /v1/members/\{member_id\} 200 \d+\.\d ms  \[", as_text), as_text
    written = "\n".join(JsonFormatter().format(r) + TextFormatter().format(r) for r in lines)
    for secret in (TOKEN, "sk-wrong", "anna.secret", "?", member_id):
        assert secret not in written, secret
