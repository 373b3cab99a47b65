"""Every /v1 route declares one scope in its OpenAPI and refuses a key without it."""

from __future__ import annotations

import re
from typing import Any

from shared.keys import ADMIN, SCOPES
from tests.integration.conftest import join_body
from tests.integration.test_access_support import ALL_SERVICES, bearer, put_keys

#: A value for any path parameter: the route answers 404 or 422 for it once the scope passes.
PLACEHOLDER = "x"


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if path.startswith("/v1/")
    ]


def _request(method: str, path: str, token: str) -> dict[str, Any]:
    """The keyword arguments of a request to the route with this key: placeholders for its
    path, an empty body for a write (the scope is checked before the body is read)."""
    url = re.sub(r"\{[^}]+\}", PLACEHOLDER, path)
    kw: dict[str, Any] = {"method": method, "url": url, "headers": bearer(token)}
    if path == "/v1/members/import":
        kw.update(content=b"", headers={**bearer(token), "Content-Type": "text/csv"})
    elif method in ("POST", "PUT", "PATCH"):
        kw["json"] = {}
    return kw


async def test_every_v1_operation_needs_its_one_scope_and_refuses_a_key_without_it(services):
    async with services(*ALL_SERVICES) as s:
        declared: dict[tuple[str, str, str], str] = {}
        for name in ALL_SERVICES:
            doc = (await s[name].http.get("/openapi.json")).json()
            for method, path, op in _operations(doc):
                security = op.get("security")
                assert security and len(security) == 1, f"{name} {method} {path}: {security}"
                (requirement,) = security
                assert list(requirement) == ["apiKey"], f"{name} {method} {path}: {requirement}"
                assert len(requirement["apiKey"]) == 1, f"{name} {method} {path}: {requirement}"
                (scope,) = requirement["apiKey"]
                assert scope in SCOPES, f"{name} {method} {path}: unknown scope {scope}"
                declared[(name, method, path)] = scope
            # The operational endpoints stay open (probes and scrapers carry no key).
            for path in ("/healthz", "/readyz", "/metrics"):
                assert "security" not in doc["paths"][path]["get"]
        assert {service for service, _, _ in declared} == set(ALL_SERVICES)

        scopes = set(declared.values())
        made = await put_keys(
            s,
            [
                *((f"without {scope}", set(SCOPES) - {scope, ADMIN}) for scope in scopes),
                *((f"only {scope}", {scope}) for scope in scopes),
            ],
        )
        for (name, method, path), scope in declared.items():
            http = s[name].http
            without, _ = made[f"without {scope}"]
            r = await http.request(**_request(method, path, without))
            where = f"{name} {method} {path} without {scope}"
            assert r.status_code == 403, f"{where}: {r.status_code} {r.text}"
            error = r.json()["error"]
            assert error["code"] == "forbidden", where
            assert error["details"]["missing_scope"] == scope, f"{where}: {error}"
            assert scope in error["message"], f"{where}: {error}"

            only, _ = made[f"only {scope}"]
            r = await http.request(**_request(method, path, only))
            assert r.status_code not in (401, 403), (
                f"{name} {method} {path} with only {scope}: {r.text}"
            )


async def test_erasing_needs_members_erase_while_leaving_needs_members_write(services):
    async with services("members") as s:
        http = s["members"].http
        # OpenAPI names the route's scope; its description and the parameter's say the rest.
        leave = (await http.get("/openapi.json")).json()["paths"]["/v1/members/{member_id}"]
        assert leave["delete"]["security"] == [{"apiKey": ["members:write"]}]
        assert "members:erase" in leave["delete"]["description"]
        erase = next(p for p in leave["delete"]["parameters"] if p["name"] == "erase")
        assert "members:erase" in erase["description"]

        made = await put_keys(
            s,
            [
                ("crm", ["members:write", "members:read"]),
                ("eraser", ["members:erase"]),
            ],
        )
        crm, eraser = bearer(made["crm"][0]), bearer(made["eraser"][0])
        first = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        second = (await http.post("/v1/members", json=join_body())).json()["member_id"]

        r = await http.delete(f"/v1/members/{first}", params={"erase": "true"}, headers=crm)
        assert r.status_code == 403
        assert r.json()["error"]["details"]["missing_scope"] == "members:erase"
        assert (await http.get(f"/v1/members/{first}")).json()["status"] == "active"

        r = await http.delete(f"/v1/members/{first}", headers=eraser)
        assert r.status_code == 403
        assert r.json()["error"]["details"]["missing_scope"] == "members:write"

        r = await http.delete(f"/v1/members/{first}", params={"erase": "true"}, headers=eraser)
        assert r.status_code == 204
        assert (await http.get(f"/v1/members/{first}")).status_code == 404

        assert (await http.delete(f"/v1/members/{second}", headers=crm)).status_code == 204
        assert (await http.get(f"/v1/members/{second}")).json()["status"] == "left"
