"""Helpers shared by the API key and scope tests (no tests of its own)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from shared import keys
from shared.keys import KeyRecord
from shared.topology import SERVICES
from tests.helpers import wait_until
from tests.integration.conftest import Running

ALL_SERVICES = SERVICES


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def put_keys(
    running: Mapping[str, Running],
    wanted: Iterable[tuple[str, Iterable[str]]],
    expires_at: datetime | None = None,
) -> dict[str, tuple[str, KeyRecord]]:
    """Keys written straight into the bucket, by name (as the admin endpoint would), once
    every running service's watch has delivered them: {name: (token, record)}."""
    js = running["members"].runtime.bus.js
    made: dict[str, tuple[str, KeyRecord]] = {}
    for name, scopes in wanted:
        token, record = keys.new_key(name, list(scopes), expires_at)
        await keys.put(js, record)
        made[name] = (token, record)
    await known_everywhere(running, [record.id for _, record in made.values()])
    return made


async def known_everywhere(running: Mapping[str, Running], key_ids: Iterable[str]) -> None:
    ids = set(key_ids)

    def known() -> bool:
        return all(ids <= set(s.runtime.keys.records) for s in running.values())

    await wait_until(known, timeout=10, message=f"keys {sorted(ids)} never reached every service")
