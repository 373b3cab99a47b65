"""The HTTP contract in tests: each service's OpenAPI document, and every answer a test gets
checked against it, so a route that answers what its document does not say fails the test.

`Conformance(doc).check(...)` holds an answer to its operation's documented responses: its
status must be one of them (a 500 only needs the error shape: it is a bug, which the fuzzer
forbids), its content type one the status documents, and a JSON body valid against the
documented schema. The integration harness (`tests/integration/conftest.py`) checks every
answer of its clients; `tests/unit/test_openapi_contract.py` checks the documents themselves.

`python -m tests.contract > tests/unit/operation_ids.txt` rewrites the committed list of
operation ids, after a rename that is meant (generated clients' method names change with it).
"""

from __future__ import annotations

import importlib
import json
import os
import re
from functools import cache
from typing import Any
from unittest import mock

import httpx
from jsonschema import Draft202012Validator

from shared.http.openapi import operation_ids
from shared.topology import SERVICES


@cache
def service_document(service: str) -> dict[str, Any]:
    """The OpenAPI document `service` serves, built without any server."""
    module = importlib.import_module(f"services.{service}.app")
    # An empty bootstrap token: keys only (a short one is refused at start, weak_secrets.py).
    with mock.patch.dict(os.environ, {"SARAFAN_API_TOKEN": ""}):
        app = module.build()
    return app.openapi()  # type: ignore[no-any-return]


def operation_lines() -> list[str]:
    """`<operationId> <METHOD> <path>` of every operation of every service, sorted."""
    return sorted(
        f"{op_id} {method} {path}"
        for service in SERVICES
        for op_id, method, path in operation_ids(service_document(service))
    )


def _template(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts if p))


def error_shaped(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    )


class Conformance:
    """Checks answers against one service's OpenAPI document (see the module)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.components = doc.get("components", {})
        # Literal paths first (/v1/members/import before /v1/members/{member_id}).
        self.paths = sorted(
            ((_template(p), p, item) for p, item in doc.get("paths", {}).items()),
            key=lambda found: found[1].count("{"),
        )
        self._validators: dict[str, Draft202012Validator] = {}

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        for pattern, template, item in self.paths:
            if pattern.fullmatch(path) and method.lower() in item:
                return template, item[method.lower()]
        return None

    async def on_response(self, response: httpx.Response) -> None:
        """An httpx response hook."""
        await response.aread()
        self.check(
            response.request.method,
            response.request.url.path,
            response.status_code,
            response.headers.get("content-type", ""),
            response.content,
        )

    def check(self, method: str, path: str, status: int, content_type: str, body: bytes) -> None:
        found = self.operation(method, path)
        media = content_type.split(";")[0].strip().lower()
        decoded = _json(body) if media == "application/json" else None
        if found is None or status == 500:
            # Routing's own 404/405 and a bug's 500: the one error shape, nothing more.
            assert status < 400 or error_shaped(decoded), (method, path, status, body[:300])
            return
        template, operation = found
        where = f"{method} {template} answered {status}"
        documented = operation["responses"].get(str(status))
        assert documented is not None, (
            f"{where}, which its OpenAPI responses {sorted(operation['responses'])} do not "
            f"list: {body[:300]!r}"
        )
        content = documented.get("content") or {}
        if not content:
            assert not body, f"{where} with a body its document does not describe"
            return
        assert media in content, f"{where} as {media!r}, documented: {sorted(content)}"
        schema = content[media].get("schema")
        if media != "application/json" or not schema:
            return
        errors = sorted(
            self._validator(schema).iter_errors(decoded), key=lambda e: list(e.absolute_path)
        )
        assert not errors, (
            f"{where} with a body its schema refuses: {errors[0].message} at "
            f"{list(errors[0].absolute_path)}: {body[:300]!r}"
        )

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            # `#/components/...` references resolve against this root.
            self._validators[key] = Draft202012Validator({**schema, "components": self.components})
        return self._validators[key]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


if __name__ == "__main__":
    print("\n".join(operation_lines()))
