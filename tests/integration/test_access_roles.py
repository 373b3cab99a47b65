"""Roles are granted, not claimed: coordinator and staff need a key with admin to be given."""

from __future__ import annotations

import json

from tests.helpers import wait_until
from tests.integration.conftest import join_body
from tests.integration.test_access_support import bearer, put_keys

HOURS = {"hours": 2.0, "activity": "food bank", "date": "2026-11-20"}


async def test_a_sign_up_key_cannot_join_anyone_as_coordinator_or_staff(services):
    async with services("members") as s:
        http = s["members"].http
        made = await put_keys(s, [("sign-up page", ["members:join"])])
        signup = bearer(made["sign-up page"][0])

        for roles in (["coordinator"], ["volunteer", "staff"]):
            body = join_body(roles=roles)
            r = await http.post("/v1/members", json=body, headers=signup)
            assert r.status_code == 403, r.text
            error = r.json()["error"]
            assert (error["code"], error["details"]["missing_scope"]) == ("forbidden", "admin")
            assert "admin" in error["message"] and roles[-1] in error["message"]
        listed = (await http.get("/v1/members", params={"role": "coordinator"})).json()
        assert listed["items"] == []

        # What a sign-up page is for still works: volunteers and partners need no more.
        r = await http.post("/v1/members", json=join_body(roles=["partner"]), headers=signup)
        assert r.status_code == 201, r.text
        # An admin key (here the bootstrap one) grants the role at join.
        r = await http.post("/v1/members", json=join_body(roles=["volunteer", "coordinator"]))
        assert r.status_code == 201 and r.json()["roles"] == ["volunteer", "coordinator"]


async def test_a_member_write_key_cannot_promote_to_staff_but_may_keep_or_add_plain_roles(
    services,
):
    async with services("members") as s:
        http = s["members"].http
        made = await put_keys(s, [("crm sync", ["members:write", "members:read"])])
        crm = bearer(made["crm sync"][0])
        volunteer = (await http.post("/v1/members", json=join_body())).json()["member_id"]
        coordinator = (
            await http.post("/v1/members", json=join_body(roles=["coordinator"]))
        ).json()["member_id"]

        r = await http.patch(f"/v1/members/{volunteer}", json={"roles": ["staff"]}, headers=crm)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["details"]["missing_scope"] == "admin"
        member = (await http.get(f"/v1/members/{volunteer}", headers=crm)).json()
        assert (member["roles"], member["version"]) == (["volunteer"], 1)

        r = await http.patch(
            f"/v1/members/{volunteer}", json={"roles": ["volunteer", "partner"]}, headers=crm
        )
        assert r.status_code == 200 and r.json()["roles"] == ["volunteer", "partner"]
        # Keeping a role the member already holds is not granting it.
        r = await http.patch(
            f"/v1/members/{coordinator}",
            json={"roles": ["coordinator", "partner"], "region": "kazan"},
            headers=crm,
        )
        assert r.status_code == 200, r.text
        # The admin key grants it.
        r = await http.patch(f"/v1/members/{volunteer}", json={"roles": ["staff"]})
        assert r.status_code == 200 and r.json()["roles"] == ["staff"]


async def test_a_volunteer_who_promotes_herself_still_cannot_approve_hours(services):
    """The case of the issue: a volunteer's approval is refused, she PATCHes herself to staff,
    and the same approval must stay refused."""
    async with services("members", "engagement") as s:
        members, engagement = s["members"].http, s["engagement"].http
        made = await put_keys(
            s,
            [
                ("sign-up page", ["members:join"]),
                ("members app", ["members:write", "members:read"]),
                ("volunteers app", ["engagement:write", "engagement:read", "hours:decide"]),
            ],
        )
        signup, app = bearer(made["sign-up page"][0]), bearer(made["members app"][0])
        hours_app = bearer(made["volunteers app"][0])

        async def joined(roles: list[str], headers: dict[str, str]) -> str:
            r = await members.post("/v1/members", json=join_body(roles=roles), headers=headers)
            assert r.status_code == 201, r.text
            member_id = r.json()["member_id"]

            async def known() -> bool:
                path = f"/v1/members/{member_id}/engagement"
                return (await engagement.get(path, headers=hours_app)).status_code == 200

            await wait_until(known, timeout=15, message=f"engagement never learned {member_id}")
            return str(member_id)

        anna = await joined(["volunteer"], signup)
        vera = await joined(["volunteer"], signup)
        r = await engagement.post("/v1/hours", json={"member_id": anna, **HOURS}, headers=hours_app)
        assert r.status_code == 201, r.text
        approve = f"/v1/hours/{r.json()['entry_id']}/approve"

        r = await engagement.post(approve, json={"by": vera}, headers=hours_app)
        assert r.status_code == 403, r.text

        # Joining again as coordinator, or promoting herself, is refused: roles are granted.
        r = await members.post("/v1/members", json=join_body(roles=["coordinator"]), headers=signup)
        assert r.status_code == 403
        r = await members.patch(f"/v1/members/{vera}", json={"roles": ["staff"]}, headers=app)
        assert r.status_code == 403
        assert r.json()["error"]["details"]["missing_scope"] == "admin"

        r = await engagement.post(approve, json={"by": vera}, headers=hours_app)
        assert r.status_code == 403, r.text
        entry = (await engagement.get(f"/v1/members/{anna}/hours", headers=hours_app)).json()
        assert entry["items"][0]["status"] == "pending"

        # The same key approves once an admin has granted someone the role: it was the role,
        # never the key, that was missing.
        boris = await joined(["coordinator"], {})  # the client's default: the bootstrap key
        r = await engagement.post(approve, json={"by": boris}, headers=hours_app)
        assert r.status_code == 200 and r.json()["decided_by"] == boris


async def test_an_import_without_admin_rejects_the_rows_that_give_coordinator_or_staff(services):
    rows = [
        {"display_name": "Olga", "email": "olga@example.org", "roles": ["coordinator"]},
        {"display_name": "Pavel", "email": "pavel@example.org", "roles": ["volunteer"]},
        {"display_name": "Rita", "email": "rita@example.org", "roles": ["partner", "staff"]},
    ]
    common = {"region": "moscow", "joined_at": "2021-03-14", "consent_terms": True}
    body = "\n".join(json.dumps({**common, **row}) for row in rows) + "\n"
    jsonl = {"Content-Type": "application/x-ndjson"}
    async with services("members") as s:
        http = s["members"].http
        made = await put_keys(s, [("crm import", ["members:write"])])
        crm = bearer(made["crm import"][0])

        r = await http.post("/v1/members/import", content=body, headers={**crm, **jsonl})
        assert r.status_code == 200, r.text
        report = r.json()
        assert (report["created"], report["rejected"]) == (1, 2)
        why = {row["row"]: row for row in report["rejected_rows"]}
        assert sorted(why) == [1, 3]
        assert all(w["code"] == "forbidden" and "admin" in w["message"] for w in why.values())
        assert "coordinator" in why[1]["message"] and "staff" in why[3]["message"]

        # The same file with an admin key: the rejected rows are created, Pavel is not doubled.
        r = await http.post("/v1/members/import", content=body, headers=jsonl)
        assert (r.json()["created"], r.json()["existing"], r.json()["rejected"]) == (2, 1, 0)
        staff = (await http.get("/v1/members", params={"role": "staff"})).json()["items"]
        assert [m["display_name"] for m in staff] == ["Rita"]
