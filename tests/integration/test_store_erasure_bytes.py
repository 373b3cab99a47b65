"""nx-27017 as `sarafan up` starts it keeps no erased bytes in its files once the service has
scrubbed its database after the erasure (shared/scrub.py: a checkpoint and a vacuum); without
the scrub the WAL journal keeps them in the -wal file, a checkpoint notwithstanding; the
truncate journal never keeps them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient, MongoClient

from sarafan.embedded import LOCALHOST, free_port, mongo_child
from sarafan.mongo_checks import sqlite_secure_delete
from shared.scrub import scrub

NEEDLE = "vera.erasable@example.org"


@pytest.fixture
def nx(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[MongoClient, Path]]:
    """An nx-27017 of its own in the journal mode the test is parametrised with."""
    port = free_port()
    child = mongo_child(tmp_path, port, request.param)
    child.die_with_parent = True
    child.start()
    client: MongoClient = MongoClient(f"mongodb://{LOCALHOST}:{port}", directConnection=True)
    try:
        child.wait_ready(30)
        yield client, tmp_path / "mongo"
    finally:
        client.close()
        child.stop()


def write_then_erase(client: MongoClient) -> None:
    """A member among others, with an indexed email, then replaced by a tombstone (an erasure)."""
    members = client["sarafan_members"]["members"]
    members.create_index("email")
    members.insert_many(
        [{"_id": f"m{i}", "email": f"m{i}@x.org", "pad": "x" * 300} for i in range(300)]
    )
    members.insert_one({"_id": "vera", "email": NEEDLE, "display_name": "Vera"})
    members.update_one({"_id": {"$eq": "vera"}}, {"$set": {"display_name": "Vera V"}})
    members.replace_one({"_id": "vera"}, {"_id": "vera", "status": "erased"})


def files_naming(directory: Path) -> dict[str, int]:
    found = {}
    for path in sorted(directory.iterdir()):
        count = path.read_bytes().count(NEEDLE.encode())
        if count:
            found[path.name] = count
    return found


@pytest.mark.parametrize("nx", ["truncate"], indirect=True)
def test_the_truncate_journal_leaves_no_erased_bytes_in_any_database_file(nx):
    client, directory = nx
    port = client.address[1]
    if sqlite_secure_delete(port) is False:
        pytest.skip("this SQLite keeps deleted rows in free space (secure_delete off)")
    write_then_erase(client)
    assert files_naming(directory) == {}
    assert "sarafan_members.db-wal" not in {p.name for p in directory.iterdir()}


@pytest.mark.parametrize("nx", ["wal"], indirect=True)
def test_the_wal_journal_keeps_erased_bytes_in_the_wal_file_even_after_a_checkpoint(nx):
    # Why a checkpoint is not enough, and the scrub vacuums too (docs/members.md).
    client, directory = nx
    write_then_erase(client)
    db = client["sarafan_members"]
    checkpoint = db.command({"wal_checkpoint": 1})
    assert checkpoint["mode"] == "PASSIVE"  # the only kind nx-27017 runs over the wire
    assert "sarafan_members.db-wal" in files_naming(directory)


@pytest.mark.parametrize("nx", ["wal"], indirect=True)
async def test_a_scrub_after_the_erasure_leaves_no_erased_bytes_in_any_file_of_the_wal_store(nx):
    client, directory = nx
    port = client.address[1]
    if sqlite_secure_delete(port) is False:
        pytest.skip("this SQLite keeps deleted rows in free space (secure_delete off)")
    write_then_erase(client)
    assert "sarafan_members.db-wal" in files_naming(directory)
    mongo = AsyncMongoClient(f"mongodb://{LOCALHOST}:{port}", directConnection=True)
    try:
        assert await scrub(mongo["sarafan_members"]) is True
        # The store goes on: what is written after the scrub is kept as before.
        await mongo["sarafan_members"]["members"].insert_one({"_id": "next", "email": "n@x.org"})
    finally:
        await mongo.close()
    assert files_naming(directory) == {}
    assert client["sarafan_members"]["members"].count_documents({}) == 302
