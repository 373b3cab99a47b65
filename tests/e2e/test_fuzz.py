"""A fuzzer against every service's OpenAPI document, on a stack started like `sarafan up`.

schemathesis generates requests from each `/openapi.json`: valid ones (positive) and ones that
break the schema on purpose (negative: wrong types, missing fields, out-of-range values, odd
strings). No answer may be a server error, every 4xx has the one error shape
`{"error": {"code", "message", ...}}`, and every answer is one its operation documents: its
status, content type, headers and body schema (a drift of the contract fails here). Bounded: a
fixed number of examples per operation and mode, so the suite's time stays predictable.
"""

from __future__ import annotations

import io
import itertools
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from unittest import mock

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sarafan.supervisor import Stack, StackConfig
from shared.topology import SERVICES
from tests.helpers import strong_token

TOKEN = strong_token()
EXAMPLES = int(os.environ.get("SARAFAN_FUZZ_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The services inherit the environment of `sarafan up`: with the unsubscribe secret, as
    # an operator who sends marketing e-mail runs them.
    with mock.patch.dict(os.environ, {"SARAFAN_UNSUBSCRIBE_SECRET": TOKEN}):
        yield from _running(tmp_path_factory)


def _running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(
        StackConfig.with_free_ports(tmp_path_factory.mktemp("fuzz") / "home"),
        out=io.StringIO(),
        environ={**os.environ, "SARAFAN_API_TOKEN": TOKEN},
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _schema(stack: Stack, service: str) -> schemathesis.BaseSchema:
    url = stack.config.service_url(service)
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.config.update(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"})
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
    )
    return schema


@schemathesis.check
def error_shape(ctx, response, case):  # type: ignore[no-untyped-def]
    """Every 4xx and 5xx of the API answers `{"error": {"code": str, "message": str, ...}}`.
    Pages outside /v1 (the unsubscribe link's) answer HTML, as their content types declare."""
    if response.status_code < 400 or not case.path.startswith("/v1/"):
        return None
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(
            f"{response.status_code} is not JSON: {response.text[:200]!r}"
        ) from exc
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{response.status_code} without the error shape: {body!r}"[
        :400
    ]
    assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), error
    return True


CHECKS = [
    not_a_server_error,
    error_shape,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def seed(stack: Stack) -> dict[str, str]:
    """A member, a question with an answer, hours and a campaign: real ids for path parameters,
    so that fuzzed bodies and queries reach the code behind the 404."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = stack.config.service_url
    with httpx.Client(headers=auth, timeout=30) as http:
        join = {
            "display_name": "Fuzz",
            "email": "fuzz@example.org",
            "region": "moscow",
            "roles": ["coordinator"],
            "consent": {"terms": True, "marketing": True},
        }
        member = http.post(f"{url('members')}/v1/members", json=join).json()["member_id"]
        engagement = url("engagement")
        deadline = time.monotonic() + 30
        while http.get(f"{engagement}/v1/members/{member}/engagement").status_code != 200:
            assert time.monotonic() < deadline, "engagement never learned of the member"
            time.sleep(0.1)
        post = http.post(
            f"{engagement}/v1/posts", json={"author_id": member, "kind": "question", "title": "?"}
        ).json()["post_id"]
        entry = http.post(
            f"{engagement}/v1/hours",
            json={"member_id": member, "hours": 1, "activity": "x", "date": "2026-11-01"},
        ).json()["entry_id"]
        now = datetime.now(UTC)
        campaign = http.post(
            f"{url('campaigns')}/v1/campaigns",
            json={"name": "Fuzz", "kind": "contest", "starts_at": now.isoformat(),
                  "ends_at": (now + timedelta(days=7)).isoformat(),
                  "audience": {"regions": [], "roles": []}, "scoring": {"post-created": 1},
                  "milestones": [5], "winners": 1,
                  "announcement": {"ru": "Конкурс", "en": "Contest"}},
        ).json()["campaign_id"]  # fmt: skip
        activities = url("activities")
        while http.get(f"{activities}/v1/members/{member}/activities").status_code != 200:
            assert time.monotonic() < deadline + 30, "activities never learned of the member"
            time.sleep(0.1)
        starts = now + timedelta(hours=1)
        activity = http.post(
            f"{activities}/v1/activities",
            json={"title": "Fuzz", "region": "moscow", "organiser_id": member,
                  "status": "published",
                  "shifts": [{"role": "any", "starts_at": starts.isoformat(),
                              "ends_at": (starts + timedelta(hours=2)).isoformat(),
                              "capacity": 5}]},
        ).json()  # fmt: skip
        shift = activity["shifts"][0]["shift_id"]
        signup = http.post(
            f"{activities}/v1/activities/{activity['activity_id']}/shifts/{shift}/signups",
            json={"member_id": member},
        ).json()["signup_id"]
    return {"member_id": member, "post_id": post, "entry_id": entry, "campaign_id": campaign,
            "activity_id": activity["activity_id"], "shift_id": shift,
            "signup_id": signup}  # fmt: skip


def fuzz(schema: schemathesis.BaseSchema, known: dict[str, str]) -> list[str]:
    """Every operation, positive then negative, with generated path ids and with real ones:
    the failures found (one line each)."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {p.name for p in operation.path_parameters}
        real = {name: known[name] for name in names if name in known}
        variants = [None, real] if real and len(real) == len(names) else [None]
        for mode, path in itertools.product(
            (GenerationMode.POSITIVE, GenerationMode.NEGATIVE), variants
        ):

            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path))
            @settings(
                deadline=None,
                suppress_health_check=list(HealthCheck),
                max_examples=EXAMPLES,
                derandomize=True,
                database=None,
                phases=[Phase.generate],
            )
            def run(case) -> None:  # type: ignore[no-untyped-def]
                response = case.call(timeout=30)
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                continue  # nothing to break in it (no parameters, or only a path id)
            except Exception as exc:
                text = " ".join(str(exc).split())
                where = "real ids" if path else "generated ids"
                failures.append(f"{operation.label} ({mode.value}, {where}): {text[:600]}")
    return failures


@pytest.fixture(scope="module")
def known(stack: Stack) -> dict[str, str]:
    return seed(stack)


@pytest.mark.parametrize("service", SERVICES)
def test_no_generated_request_gets_a_server_error_and_errors_have_one_shape(stack, known, service):
    failures = fuzz(_schema(stack, service), known)
    assert not failures, f"{len(failures)} operation(s) of {service} failed:\n" + "\n".join(
        failures
    )
