"""Every service's OpenAPI document is one a client can be generated from: valid OpenAPI 3.1,
the real error shape and statuses, and operation ids that are unique and do not change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from shared.http.openapi import FASTAPI_VALIDATION, WRITES
from shared.topology import SERVICES
from tests.contract import Conformance, operation_lines, service_document

SNAPSHOT = Path(__file__).with_name("operation_ids.txt")
ERROR = {"$ref": "#/components/schemas/Error"}


def operations(service: str):
    for path, item in service_document(service)["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


@pytest.mark.parametrize("service", SERVICES)
def test_the_document_is_valid_openapi_3_1(service: str) -> None:
    doc = service_document(service)
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # the OpenAPI 3.1 schema, every $ref resolved


def test_operation_ids_are_unique_across_the_services_and_as_committed() -> None:
    lines = operation_lines()
    ids = [line.split()[0] for line in lines]
    assert len(ids) == len(set(ids)), "an operation id is used twice"
    committed = SNAPSHOT.read_text().split("\n")
    assert lines == [line for line in committed if line], (
        "operation ids changed: a generated client's method names change with them. If that "
        "is meant, `python -m tests.contract > tests/unit/operation_ids.txt`.\n"
        + "\n".join(sorted(set(lines) ^ set(committed) - {""}))
    )


@pytest.mark.parametrize("service", SERVICES)
def test_every_error_answer_is_the_one_error_shape_and_fastapis_422_is_gone(service: str) -> None:
    doc = service_document(service)
    assert not set(FASTAPI_VALIDATION) & set(doc["components"]["schemas"])
    assert "HTTPValidationError" not in json.dumps(doc)
    for path, method, operation in operations(service):
        for status, response in operation["responses"].items():
            if int(status) < 400 or not path.startswith("/v1/"):
                continue
            media = response["content"]["application/json"]
            assert media["schema"] == ERROR, (method, path, status)
            assert media["examples"], (method, path, status)
            for example in media["examples"].values():
                assert (
                    Conformance(doc).check(
                        method.upper(),
                        path,
                        int(status),
                        "application/json",
                        json.dumps(example["value"]).encode(),
                    )
                    is None
                )


@pytest.mark.parametrize("service", SERVICES)
def test_each_operation_documents_what_the_kernel_answers_for_it(service: str) -> None:
    for path, method, operation in operations(service):
        statuses = set(operation["responses"])
        params = operation.get("parameters", [])
        if path.startswith("/v1/"):
            assert {"401", "403", "503"} <= statuses, (method, path)
            assert ("429" in statuses) == (method in WRITES), (method, path)
        if method == "post" and path.startswith("/v1/"):
            assert {"409", "422"} <= statuses
            assert "Idempotency-Key" in {p["name"] for p in params}, path
        if "requestBody" in operation:
            assert {"400", "413", "422"} <= statuses, (method, path)
        if any(p["in"] == "path" for p in params):
            assert "404" in statuses, (method, path)
        if "429" in statuses:
            assert "Retry-After" in operation["responses"]["429"]["headers"]


def test_a_status_the_document_does_not_list_fails_the_conformance_check() -> None:
    members = Conformance(service_document("members"))
    body = json.dumps({"error": {"code": "teapot", "message": "no"}}).encode()
    with pytest.raises(AssertionError, match="do not list"):
        members.check("GET", "/v1/members/m_1", 418, "application/json", body)
    with pytest.raises(AssertionError, match="schema refuses"):
        members.check("GET", "/v1/members/m_1", 404, "application/json", b'{"detail": "x"}')
    members.check("GET", "/v1/members/m_1", 404, "application/json", body)
