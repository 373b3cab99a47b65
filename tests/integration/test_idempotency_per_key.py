"""An Idempotency-Key record belongs to the API key that made it; the route's scope is checked
before a record is claimed or replayed; only answers that did the work (2xx) are kept."""

from __future__ import annotations

import hashlib
import json

from shared.events import utcnow
from shared.http import record_id
from shared.store import epoch_ms
from tests.helpers import wait_until
from tests.integration.conftest import join_body
from tests.integration.test_access_support import bearer, put_keys
from tests.integration.test_engagement_support import join


async def test_another_key_replaying_a_join_with_its_idempotency_key_gets_403_not_the_member(
    services,
):
    async with services("members") as s:
        http = s["members"].http
        made = await put_keys(s, [("sign-up page", ["members:join"]), ("inbox", ["notifier:read"])])
        signup, reader = bearer(made["sign-up page"][0]), bearer(made["inbox"][0])
        body, key = join_body(), {"Idempotency-Key": "join-olga-1"}

        first = await http.post("/v1/members", json=body, headers={**signup, **key})
        assert first.status_code == 201, first.text

        stolen = await http.post("/v1/members", json=body, headers={**reader, **key})
        assert stolen.status_code == 403, stolen.text
        assert stolen.json()["error"]["details"] == {"missing_scope": "members:join"}
        assert "Idempotent-Replayed" not in stolen.headers
        assert body["email"] not in stolen.text and first.json()["referral_code"] not in stolen.text

        # The owner's retry still gets its own answer back.
        again = await http.post("/v1/members", json=body, headers={**signup, **key})
        assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
        assert again.json() == first.json()
        records = s["members"].runtime.db["idempotency_keys"]
        assert [d["_id"] async for d in records.find({}, {"_id": 1})] == [
            record_id(made["sign-up page"][1].id, "/v1/members", "join-olga-1")
        ]


async def test_the_same_idempotency_key_from_two_keys_is_two_requests(services):
    async with services("members") as s:
        http = s["members"].http
        made = await put_keys(s, [("page a", ["members:join"]), ("page b", ["members:join"])])
        a, b = bearer(made["page a"][0]), bearer(made["page b"][0])
        body, key = join_body(), {"Idempotency-Key": "join-1"}

        first = await http.post("/v1/members", json=body, headers={**a, **key})
        assert first.status_code == 201
        # Another key's request runs for real: the address is taken, nothing of the first shown.
        other = await http.post("/v1/members", json=body, headers={**b, **key})
        assert (other.status_code, other.json()["error"]["code"]) == (409, "contact_taken")
        assert first.json()["member_id"] not in other.text
        fresh = await http.post("/v1/members", json=join_body(), headers={**b, **key})
        assert fresh.status_code == 201 and "Idempotent-Replayed" not in fresh.headers
        assert fresh.json()["member_id"] != first.json()["member_id"]


async def test_ids_derived_from_an_idempotency_key_differ_between_api_keys(services):
    async with services("members", "engagement") as s:
        members, http = s["members"].http, s["engagement"].http
        anna, boris = await join(members, http), await join(members, http)
        made = await put_keys(s, [("app a", ["engagement:write"]), ("app b", ["engagement:write"])])
        key = {"Idempotency-Key": "post-1"}
        r1 = await http.post(
            "/v1/posts",
            json={"author_id": anna, "title": "Anna's"},
            headers={**bearer(made["app a"][0]), **key},
        )
        r2 = await http.post(
            "/v1/posts",
            json={"author_id": boris, "title": "Boris's"},
            headers={**bearer(made["app b"][0]), **key},
        )
        assert r1.status_code == r2.status_code == 201, (r1.text, r2.text)
        assert r1.json()["post_id"] != r2.json()["post_id"]
        assert (r2.json()["author_id"], r2.json()["title"]) == (boris, "Boris's")


async def test_a_403_is_not_kept_and_the_rightful_keys_request_with_that_key_succeeds(services):
    async with services("members") as s:
        http = s["members"].http
        made = await put_keys(s, [("sign-up page", ["members:join"]), ("crm", ["members:read"])])
        signup, crm = bearer(made["sign-up page"][0]), bearer(made["crm"][0])
        body, key = join_body(), {"Idempotency-Key": "join-olga-1"}

        # Poisoning: another key tries the guessable key first.
        for _ in range(2):
            r = await http.post("/v1/members", json=body, headers={**crm, **key})
            assert r.status_code == 403 and "Idempotent-Replayed" not in r.headers
        # A 403 from the route itself (a role that needs admin) is not kept either.
        boss = join_body(roles=["coordinator"])
        r = await http.post("/v1/members", json=boss, headers={**signup, **key})
        assert r.status_code == 403 and r.json()["error"]["details"]["missing_scope"] == "admin"
        assert await s["members"].runtime.db["idempotency_keys"].count_documents({}) == 0

        real = await http.post("/v1/members", json=body, headers={**signup, **key})
        assert real.status_code == 201, real.text
        assert "Idempotent-Replayed" not in real.headers


async def test_a_422_is_not_kept_so_the_corrected_request_with_the_same_key_runs(services):
    async with services("members") as s:
        http = s["members"].http
        key = {"Idempotency-Key": "join-typo"}
        wrong = await http.post("/v1/members", json=join_body(email="olga@"), headers=key)
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (422, "invalid_email")
        bad_code = await http.post(
            "/v1/members", json=join_body(referral_code="NOPE123"), headers=key
        )
        assert bad_code.json()["error"]["code"] == "unknown_referral_code"

        right = await http.post("/v1/members", json=join_body(), headers=key)
        assert right.status_code == 201, right.text
        assert "Idempotent-Replayed" not in right.headers


async def test_a_409_about_the_moment_is_not_replayed_once_it_no_longer_holds(services):
    async with services("members") as s:
        http = s["members"].http
        body, key = join_body(), {"Idempotency-Key": "join-again"}
        taken = (await http.post("/v1/members", json=body)).json()["member_id"]
        r = await http.post("/v1/members", json=body, headers=key)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "contact_taken")
        # The address is freed (the member erased): the same request now joins.
        r = await http.delete(f"/v1/members/{taken}", params={"erase": "true"})
        assert r.status_code == 204

        async def joins() -> bool:
            r = await http.post("/v1/members", json=body, headers=key)
            assert r.status_code in (201, 409), r.text
            return r.status_code == 201 and "Idempotent-Replayed" not in r.headers

        await wait_until(joins, message="the freed address never joined with the same key")


async def test_the_scope_is_checked_before_a_kept_answer_is_replayed(services):
    """A kept answer under a key that lacks the route's scope (as a record planted in the
    database would be) is never replayed: the kernel answers 403 before it looks."""
    async with services("members") as s:
        http = s["members"].http
        made = await put_keys(s, [("inbox", ["notifier:read"])])
        token, record = made["inbox"]
        body = json.dumps(join_body()).encode()
        await (
            s["members"]
            .runtime.db["idempotency_keys"]
            .insert_one(
                {
                    "_id": record_id(record.id, "/v1/members", "planted"),
                    "fingerprint": hashlib.sha256(body).hexdigest(),
                    "state": "done",
                    "status": 201,
                    "body": '{"member_id": "someone", "email": "someone@example.org"}',
                    "media_type": "application/json",
                    "created_at": utcnow(),
                    "created_ms": epoch_ms(utcnow()),
                    "started_ms": epoch_ms(utcnow()),
                }
            )
        )
        r = await http.post(
            "/v1/members",
            content=body,
            headers={
                **bearer(token),
                "Idempotency-Key": "planted",
                "Content-Type": "application/json",
            },
        )
        assert r.status_code == 403, r.text
        assert "someone" not in r.text and "Idempotent-Replayed" not in r.headers
