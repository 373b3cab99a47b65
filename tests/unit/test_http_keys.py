"""The kernel's rules about API keys, without a server: write rates, bound keys, record ids."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fastapi import APIRouter

from shared.http import (
    ApiError,
    RouteScopes,
    WriteLimits,
    acting_member,
    kept,
    record_id,
    require,
)
from shared.keys import ADMIN, BOOTSTRAP_ID, KeyRecord, KeyRing, Principal, new_key


def _key(rate: int | None = None, member_id: str | None = None) -> Principal:
    return Principal("k1", frozenset({"members:join"}), member_id, rate)


def _request(principal: Principal) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(principal=principal))


def test_a_key_gets_its_rate_a_minute_at_once_then_one_write_each_refill():
    now = [0.0]
    limits = WriteLimits(120, clock=lambda: now[0])
    key = _key(rate=6)
    assert [limits.take(key) for _ in range(6)] == [None] * 6
    wait = limits.take(key)
    assert wait == pytest.approx(10.0)  # 6 a minute: a token every 10 s
    now[0] += 5
    assert limits.take(key) == pytest.approx(5.0)
    now[0] += 5
    assert limits.take(key) is None
    now[0] += 3600  # an idle hour refills at most one minute's worth
    assert [limits.take(key) for _ in range(7)][-1] is not None


def test_a_key_without_a_rate_has_the_default_and_the_bootstrap_key_is_never_limited():
    limits = WriteLimits(2, clock=lambda: 0.0)
    assert [limits.take(_key()) is None for _ in range(3)] == [True, True, False]
    bootstrap = Principal(BOOTSTRAP_ID, frozenset({ADMIN}))
    assert all(limits.take(bootstrap) is None for _ in range(1000))


def test_a_429_has_the_error_shape_and_retry_after_in_whole_seconds():
    limits = WriteLimits(60, clock=lambda: 0.0)
    answer = limits.refusal(_key(rate=7), 0.2)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
    error = json.loads(answer.body)["error"]
    assert error["code"] == "rate_limited"
    assert error["details"] == {"rate_per_minute": 7, "retry_after_seconds": 1}


def test_an_unbound_key_acts_as_the_member_named_and_must_name_one():
    request = _request(_key())
    assert acting_member(request, "m1") == "m1"
    with pytest.raises(ApiError) as refused:
        acting_member(request, None, "author_id")
    assert refused.value.status == 422 and "author_id" in refused.value.message


def test_a_bound_key_acts_as_its_member_fills_an_unnamed_one_and_refuses_another():
    request = _request(_key(member_id="anna"))
    assert acting_member(request, "anna") == "anna"
    assert acting_member(request, None, "by") == "anna"
    with pytest.raises(ApiError) as refused:
        acting_member(request, "boris", "by")
    error = refused.value
    assert (error.status, error.code) == (403, "forbidden")
    assert "anna" in error.message and "by" in error.message
    assert error.details == {"bound_member_id": "anna", "field": "by"}


def test_a_key_record_kept_before_bindings_and_rates_still_loads_as_unbound_default():
    _, record = new_key("old", ["members:read"])
    old = json.loads(record.model_dump_json())
    del old["member_id"], old["rate_per_minute"]
    ring = KeyRing("")
    ring.apply(record.id, json.dumps(old).encode())
    loaded = ring.records[record.id]
    assert (loaded.member_id, loaded.rate_per_minute) == (None, None)
    assert KeyRecord.model_validate(old).scopes == ["members:read"]


def test_a_bound_key_cannot_hold_admin():
    with pytest.raises(ValueError, match="admin"):
        new_key("x", [ADMIN], member_id="anna")
    token, record = new_key("x", ["engagement:write"], member_id="anna", rate_per_minute=5)
    ring = KeyRing("")
    ring.apply(record.id, record.model_dump_json().encode())
    principal = ring.authenticate(token)
    assert principal is not None
    assert (principal.member_id, principal.rate_per_minute) == ("anna", 5)


def test_the_record_of_a_request_names_its_api_key_path_and_idempotency_key():
    assert record_id("k1", "/v1/members", "join-1") != record_id("k2", "/v1/members", "join-1")
    assert record_id("k1", "/v1/a", "b") != record_id("k1", "/v1/a b", "")  # no run-together
    assert record_id(BOOTSTRAP_ID, "/v1/members", "j") == "bootstrap /v1/members j"


def test_only_answers_that_did_the_work_are_kept():
    assert [s for s in (200, 201, 204, 401, 403, 404, 409, 412, 422, 429, 500, 503) if kept(s)] == [
        200,
        201,
        204,
    ]


def test_a_post_route_without_require_is_found_before_the_service_starts():
    router = APIRouter(prefix="/v1")

    @router.post("/declared", dependencies=[require("members:join")])
    async def declared() -> None: ...

    @router.post("/undeclared")
    async def undeclared() -> None: ...

    @router.delete("/own-check")
    async def own_check() -> None: ...

    assert RouteScopes([router]).undeclared_posts() == ["/v1/undeclared"]
