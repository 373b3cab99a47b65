"""Cursor pagination of GET /v1/members stays right while members keep joining."""

from __future__ import annotations

import asyncio
from typing import Any

from services.members.domain import list_key
from tests.integration.conftest import join_body


async def _walk(http: Any, limit: int, between_pages: Any = None, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        r = await http.get("/v1/members", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [m["member_id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        if between_pages is not None:
            await between_pages()


async def test_walking_pages_while_members_join_returns_each_existing_member_once(services):
    async with services("members") as s:
        http = s["members"].http

        async def join(region: str) -> str:
            r = await http.post("/v1/members", json=join_body(region=region))
            assert r.status_code == 201, r.text
            return r.json()["member_id"]

        existing = [await join("moscow" if i % 2 else "kazan") for i in range(40)]
        joined_meanwhile: list[str] = []

        async def keep_joining() -> None:
            while True:
                joined_meanwhile.append(await join("moscow"))
                await asyncio.sleep(0)

        async def two_more() -> None:  # joins between pages, on top of the background ones
            joined_meanwhile.extend([await join("kazan"), await join("moscow")])

        background = asyncio.create_task(keep_joining())
        try:
            walked = await _walk(http, 7, two_more)
            moscow = await _walk(http, 5, two_more, region="moscow")
        finally:
            background.cancel()
        assert joined_meanwhile, "nobody joined during the walk"

        assert len(walked) == len(set(walked)), "a member came twice"
        assert set(existing) <= set(walked), "a member present at the start was missed"
        assert walked[: len(existing)] == existing  # join order: newcomers only come after
        assert set(walked) <= set(existing) | set(joined_meanwhile)

        moscow_at_start = [m for i, m in enumerate(existing) if i % 2]
        assert len(moscow) == len(set(moscow))
        assert moscow[: len(moscow_at_start)] == moscow_at_start


async def test_members_who_joined_in_the_same_millisecond_are_each_listed_once(services):
    async with services("members") as s:
        http, store = s["members"].http, s["members"].store
        first = (await http.post("/v1/members", json=join_body())).json()
        first_doc = await store.get(first["member_id"])
        # Same joined_at for many members: the member id breaks the tie in the cursor.
        twins = [
            {**first_doc, "_id": f"twin-{i:02d}",
             "email": f"twin{i}@example.org", "referral_code": f"TWIN{i:03d}",
             "list_key": list_key(first_doc["joined_at"], f"twin-{i:02d}")}
            for i in range(12)
        ]  # fmt: skip
        await store.members.insert_many(twins)
        walked = await _walk(http, 5)
        assert sorted(walked) == sorted([first["member_id"], *(t["_id"] for t in twins)])
        assert len(walked) == len(set(walked))


async def test_members_stored_before_list_keys_existed_are_listed(services):
    async with services("members") as s:
        http, store = s["members"].http, s["members"].store
        doc = await store.get(
            (await http.post("/v1/members", json=join_body())).json()["member_id"]
        )
        old = {k: v for k, v in doc.items() if k != "list_key"}
        old.update(_id="from-first-slice", email="old@example.org", referral_code="KQX7MAC")
        await store.members.insert_one(old)
        await store.ensure_indexes()  # what a restart does
        walked = await _walk(http, 1)
        assert sorted(walked) == sorted([doc["_id"], "from-first-slice"])
