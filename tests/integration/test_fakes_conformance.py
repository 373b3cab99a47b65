"""The memory emulator (tests/fakes/memory.py) is a verified fake: the fast tests that run on it
pass with every call they make mirrored on nx-27017 (tests/fakes/mirror.py), and the mirror
fails a test on any difference between the two answers.

A failure of the first test names the call, its arguments and both answers: make the emulator
answer as nx-27017 does (never the service or the test's assertion), and say so in the
emulator's text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import InsertOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tests.fakes import memory, mirror
from tests.fakes.memory import MemoryDatabase

ROOT = Path(__file__).resolve().parents[2]


def fast_tests_on_the_emulator() -> list[str]:
    """Every fast test module that builds on the fakes (tests/fakes/*), found by its imports, so
    a new one is mirrored without being listed here."""
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests" / "unit").glob("test_*.py")
        if "from tests.fakes" in path.read_text(encoding="utf-8")
    )


def test_the_fast_tests_pass_with_every_emulator_call_mirrored_on_nx_27017(
    mongo_url: str, tmp_path: Path
) -> None:
    files = fast_tests_on_the_emulator()
    assert "tests/unit/test_members_usecases.py" in files and len(files) >= 10, files
    report = tmp_path / "mirror.json"
    env = {**os.environ, "MONGODB_URL": mongo_url, mirror.REPORT_ENV: str(report)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--mirror-memory"]
    run = subprocess.run(
        [*command, *files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    totals = json.loads(report.read_text(encoding="utf-8"))
    # The run really went through the mirror: thousands of calls, a database per fake built.
    assert totals["calls"] > 2000 and totals["databases"] > 100, totals


@pytest.fixture
def mirrored(mongo_url: str) -> Iterator[mirror.Mirror]:
    """A mirror of its own (the session's fakes stay unmirrored), its databases dropped."""
    own = mirror.Mirror(mongo_url)
    try:
        yield own
    finally:
        own.finish_test()
        own.close()


async def test_the_mirror_fails_a_call_the_emulator_answers_unlike_nx_27017(
    mirrored: mirror.Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = mirrored.wrap(MemoryDatabase("shifts"))
    await db["shifts"].insert_one({"_id": "s", "seats": {"s1": 1, "s2": 2}})
    # The emulator's answer before it learnt nx-27017's: a dotted projection nested, as on
    # MongoDB (nx-27017 returns the flat key "seats.s1").
    nested = {"_id": "s", "seats": {"s1": 1}}
    monkeypatch.setattr(memory, "project", lambda doc, projection: nested)

    with pytest.raises(AssertionError) as failed:
        await db["shifts"].find_one({"_id": "s"}, {"seats.s1": 1})

    text = str(failed.value)
    assert "find_one({'_id': 's'}, {'seats.s1': 1}" in text
    assert "{'_id': 's', 'seats': {'s1': 1}}" in text and "'seats.s1': 1" in text
    assert mirrored.finish_test() == [text]  # recorded too, for a caller that swallowed it


async def test_the_mirror_answers_as_memory_when_both_sides_agree_on_values_and_errors(
    mirrored: mirror.Mirror,
) -> None:
    coll = mirrored.wrap(MemoryDatabase("members"))["members"]
    await coll.create_index("email", unique=True)
    added = await coll.insert_one({"_id": "a", "email": "a@x"})
    with pytest.raises(DuplicateKeyError):
        await coll.insert_one({"_id": "b", "email": "a@x"})
    with pytest.raises(BulkWriteError) as failed:
        await coll.bulk_write(
            [InsertOne({"_id": "c"}), InsertOne({"_id": "a"}), InsertOne({"_id": "d"})],
            ordered=False,
        )
    found = await coll.find({}, {"_id": 1}).sort("_id", -1).to_list(None)

    assert added.inserted_id == "a"
    assert [e["index"] for e in failed.value.details["writeErrors"]] == [1]
    assert found == [{"_id": "d"}, {"_id": "c"}, {"_id": "a"}]
    assert coll.documents() == [{"_id": "a", "email": "a@x"}, {"_id": "c"}, {"_id": "d"}]
    assert mirrored.finish_test() == []


async def test_the_end_of_a_test_compares_what_each_collection_holds(
    mirrored: mirror.Mirror,
) -> None:
    db = mirrored.wrap(MemoryDatabase("notifier"))
    await db["deliveries"].insert_one({"_id": "d1", "state": "queued"})
    # A write that reached the emulator alone (no answer of the mirror differed).
    await db.mem["deliveries"].update_one({"_id": "d1"}, {"$set": {"state": "sent"}})

    [found] = mirrored.finish_test()

    assert "deliveries.documents()" in found and "'sent'" in found and "'queued'" in found
    assert db.real.name not in mirrored.client.list_database_names()  # dropped
