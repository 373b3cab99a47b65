"""Members' use cases on memory (no servers): what each writes, publishes and refuses."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from services.members import domain, importer, usecases
from services.members.store import ContactTaken, MembersRepository
from services.members.violations import RuleViolation
from shared.outbox_port import Committed
from tests.fakes.members import NOW, MembersOnMemory, join_command, members_on_memory
from tests.fakes.relay import RecordingRelay


@pytest.fixture
async def m() -> MembersOnMemory:
    return await members_on_memory()


async def join(m: MembersOnMemory, may_grant: bool = False, **overrides: Any) -> dict[str, Any]:
    return await m.use_cases().join(join_command(**overrides), may_grant=may_grant)


async def change(m: MembersOnMemory, member_id: str, expected: int | None = None, **requested):
    return await m.use_cases(clock=lambda: NOW + timedelta(days=1)).change_profile(
        member_id, requested, expected_version=expected, may_grant=False
    )


async def leave(m: MembersOnMemory, member_id: str, erase: bool = False) -> None:
    await m.use_cases().leave(member_id, erase)


# -- join ------------------------------------------------------------------------------------


async def test_a_join_stores_the_member_and_its_listing_entries_and_publishes_member_joined(m):
    member = await join(m, phone="8 916 123-45-67")
    stored = await m.member(member["_id"])
    assert stored["phone"] == "+79161234567" and stored["interests"] == ["ecology"]
    assert stored["referral_code"] == member["referral_code"] and stored["version"] == 1
    assert stored["joined_at"] == NOW and stored["consent"]["terms_at"] == NOW
    assert m.relay.types() == ["member-joined"]
    (joined,) = m.relay.published
    assert joined.subject == member["_id"] and joined.data["contacts"]["phone"] == "+79161234567"
    tags = {e["tag"] for e in m.db["member_tags"].documents()}
    assert tags == {"role:volunteer", "role:volunteer|interest:ecology"}


async def test_a_join_with_a_code_raises_referral_made_after_member_joined(m):
    anna = await join(m)
    bob = await join(m, email="bob@example.org", referral_code=anna["referral_code"].lower())
    assert bob["referred_by"] == anna["_id"]
    assert m.relay.types() == ["member-joined", "member-joined", "referral-made"]
    joined, referral = m.relay.published[1:]
    assert referral.subject == anna["_id"] and referral.data["referred_id"] == bob["_id"]
    assert referral.correlationid == joined.correlationid  # one request, one correlation


@pytest.mark.parametrize(
    ("code", "contact", "refusal"),
    [
        ("NOPE123", {"email": "bob@example.org"}, "unknown_referral_code"),
        (None, {"email": "Anna+drive@example.org"}, "self_referral"),
        (None, {"email": "bob@example.org", "left": True}, "referrer_left"),
    ],
)
async def test_a_code_is_refused_unknown_for_oneself_or_once_its_owner_left(
    m, code, contact, refusal
):
    anna = await join(m)
    if contact.pop("left", False):
        await leave(m, anna["_id"])
    published = len(m.relay.published)
    with pytest.raises(RuleViolation) as refused:
        await join(m, referral_code=code or anna["referral_code"], **contact)
    assert refused.value.code == refusal
    assert len(m.relay.published) == published


@pytest.mark.parametrize("code", ["own", "other", "NOPE123", "left"])
async def test_a_taken_contact_is_refused_before_the_referral_code_is_looked_at(m, code):
    anna = await join(m)
    boris = await join(m, email="boris@example.org")
    if code == "left":
        await leave(m, boris["_id"])
    codes = {"own": anna["referral_code"], "other": boris["referral_code"]}
    published = len(m.relay.published)
    with pytest.raises(ContactTaken) as taken:
        await join(m, email="anna@example.org", referral_code=codes.get(code, "NOPE123"))
    assert taken.value.kind == "email"
    assert len(m.relay.published) == published


async def test_a_contact_another_member_has_is_refused_and_nothing_is_published(m):
    await join(m, telegram="@anna_k")
    with pytest.raises(ContactTaken) as taken:
        await join(m, email="other@example.org", telegram="t.me/Anna_K")
    assert taken.value.kind == "telegram"
    assert m.relay.types() == ["member-joined"]
    assert len(m.db["member_tags"].documents()) == 2  # the refused join's entries went


async def test_a_join_repeated_under_its_idempotency_record_answers_with_the_first_member(m):
    first = await join(m, idempotency_record="/v1/members:k1")
    again = await join(m, idempotency_record="/v1/members:k1")
    assert again["_id"] == first["_id"] and m.relay.types() == ["member-joined"]


async def test_the_coordinator_role_is_granted_by_admin_never_claimed(m):
    with pytest.raises(usecases.RolesNeedAdmin) as refused:
        await join(m, roles=["volunteer", "coordinator"])
    assert refused.value.roles == ["coordinator"]
    member = await join(m, may_grant=True, roles=["volunteer", "coordinator"])
    assert member["roles"] == ["volunteer", "coordinator"]


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [({"terms": False}, "terms_required"), ({"email": None}, "no_contact")],
)
async def test_a_join_without_consent_or_without_a_contact_is_refused(m, overrides, refusal):
    with pytest.raises(RuleViolation) as refused:
        await join(m, **overrides)
    assert refused.value.code == refusal and m.relay.published == []


# -- change ----------------------------------------------------------------------------------


async def test_a_change_publishes_exactly_what_changed_and_bumps_the_version(m):
    anna = await join(m)
    after = await change(m, anna["_id"], expected=1, region="kazan", display_name="Anna")
    assert after["region"] == "kazan" and after["version"] == 2
    (updated,) = m.relay.of_type("member-updated")
    assert updated.data["changes"] == {"region": "kazan"}
    assert await change(m, anna["_id"], region="kazan") == after  # nothing changes
    assert len(m.relay.of_type("member-updated")) == 1


async def test_a_change_is_refused_at_another_version_after_leaving_or_for_nobody(m):
    anna = await join(m)
    with pytest.raises(usecases.VersionChanged):
        await change(m, anna["_id"], expected=7, region="kazan")
    await leave(m, anna["_id"])
    with pytest.raises(usecases.MemberClosed):
        await change(m, anna["_id"], region="kazan")
    with pytest.raises(usecases.MemberNotFound):
        await change(m, "nobody", region="kazan")


async def test_a_change_keeps_a_contact_and_the_terms(m):
    anna = await join(m)
    with pytest.raises(RuleViolation, match="at least one contact"):
        await change(m, anna["_id"], email=None)
    with pytest.raises(RuleViolation, match="cannot be withdrawn"):
        await change(m, anna["_id"], consent={"terms": False})


# -- leave -----------------------------------------------------------------------------------


async def test_leaving_twice_publishes_member_left_once(m):
    anna = await join(m)
    await leave(m, anna["_id"])
    await leave(m, anna["_id"])
    (left,) = m.relay.of_type("member-left")
    assert left.data["erase"] is False and (await m.member(anna["_id"]))["status"] == "left"
    assert m.erased == []


async def test_erasure_leaves_an_anonymous_tombstone_and_hands_the_purge_on(m):
    anna = await join(m, idempotency_record="/v1/members:k1")
    await leave(m, anna["_id"], erase=True)
    tomb = await m.member(anna["_id"])
    assert tomb["status"] == "erased" and tomb["purge"] == "pending"
    assert "email" not in tomb and "display_name" not in tomb and "region" not in tomb
    # Her member-joined was never published (the relay here publishes nothing): it went with
    # the profile; member-left is what the tombstone's write publishes.
    assert [e.type for e in m.relay.published[1:]] == ["member-left"]
    assert m.erased == [anna["_id"]] and m.db["member_tags"].documents() == []
    assert await m.store.get(anna["_id"]) is None
    await leave(m, anna["_id"], erase=True)  # erasing again changes nothing
    assert m.erased == [anna["_id"]] and len(m.relay.of_type("member-left")) == 1


async def test_leaving_is_refused_for_nobody(m):
    with pytest.raises(usecases.MemberNotFound):
        await leave(m, "nobody")


# -- import ----------------------------------------------------------------------------------


def _rows(*emails: str) -> str:
    row = {"display_name": "Vera", "region": "kazan", "joined_at": "2021-03-14", "consent_terms": 1}
    return "".join(json.dumps({**row, "email": e}) + "\n" for e in emails)


async def test_an_import_creates_new_members_counts_existing_ones_and_announces_each(m):
    await join(m, email="known@example.org")
    report = await m.use_cases().import_members(
        usecases.ImportCommand(
            _rows("vera@example.org", "known@example.org", "vera@example.org", "x@"),
            importer.JSONL,
            file_id="f1",
            welcome=False,
            first_row=1,
        ),
        may_grant=False,
    )
    assert (report.created, report.existing, report.rejected) == (1, 1, 2)
    assert [(r.row, r.code) for r in report.rejected_rows] == [
        (3, "duplicate_row"),
        (4, "invalid_email"),
    ]
    imported = m.relay.of_type("member-joined")[1:]
    assert [e.data["contacts"]["email"] for e in imported] == ["vera@example.org"]
    assert imported[0].data["imported"] is True and imported[0].data["welcome"] is False


# -- the unit of work: staged writes, made at commit -------------------------------------------


def _fail_after(monkeypatch, repository: type, method: str) -> None:
    """`uow.members.<method>` stages its writes as usual, then the use case fails (a crash
    between staging and the commit)."""
    real = getattr(repository, method)

    def staged_then_failed(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise RuntimeError("failed before the commit")

    monkeypatch.setattr(repository, method, staged_then_failed)


async def test_a_join_that_fails_after_staging_writes_no_entry_no_member_and_publishes_nothing(
    m, monkeypatch
):
    _fail_after(monkeypatch, MembersRepository, "insert")
    with pytest.raises(RuntimeError):
        await join(m)
    assert m.db["member_tags"].documents() == [] and m.db["members"].documents() == []
    assert m.relay.kicks == [] and m.relay.published == []


async def test_a_change_that_fails_before_its_commit_leaves_the_member_and_its_entries_as_they_were(
    m, monkeypatch
):
    anna = await join(m)
    entries = sorted(e["_id"] for e in m.db["member_tags"].documents())
    m.relay.forget()
    _fail_after(monkeypatch, MembersRepository, "update")
    with pytest.raises(RuntimeError):
        await change(m, anna["_id"], region="kazan", interests=["sport"])
    stored = await m.member(anna["_id"])
    assert stored["region"] == "moscow" and stored["version"] == 1
    assert sorted(e["_id"] for e in m.db["member_tags"].documents()) == entries
    assert m.relay.kicks == []


async def test_an_import_chunk_that_fails_before_its_commit_writes_nothing(m, monkeypatch):
    _fail_after(monkeypatch, MembersRepository, "insert_many")
    command = usecases.ImportCommand(
        _rows("vera@example.org", "ivan@example.org"), importer.JSONL, file_id="f1", welcome=False
    )
    with pytest.raises(RuntimeError):
        await m.use_cases().import_members(command, may_grant=False)
    assert m.db["member_tags"].documents() == [] and m.db["members"].documents() == []
    assert m.relay.kicks == []


async def test_a_join_that_lost_the_race_for_a_contact_removes_its_entries_and_publishes_nothing(
    m, monkeypatch
):
    anna = await join(m)
    entries = sorted(e["_id"] for e in m.db["member_tags"].documents())

    async def looked_before_anna_joined(contacts: Any) -> None:
        return None  # the check ran before a concurrent join took the address

    monkeypatch.setattr(m.store, "taken_kind", looked_before_anna_joined)
    with pytest.raises(ContactTaken) as taken:
        await join(m, display_name="Not Anna", interests=["sport"])
    assert taken.value.kind == "email"
    assert [d["_id"] for d in m.db["members"].documents()] == [anna["_id"]]
    assert sorted(e["_id"] for e in m.db["member_tags"].documents()) == entries
    assert m.relay.types() == ["member-joined"]


async def test_erasure_removes_the_members_idempotency_records_with_the_profile(m):
    anna = await join(m, idempotency_record="/v1/members:k1")
    boris = await join(m, email="boris@example.org")
    records = m.db["idempotency_keys"]
    await records.insert_one({"_id": "/v1/members:k1", "response": {"name": "Anna"}})
    await records.insert_one({"_id": "patch-anna", "member_id": anna["_id"]})
    await records.insert_one({"_id": "patch-boris", "member_id": boris["_id"]})
    await leave(m, anna["_id"], erase=True)
    assert [d["_id"] for d in records.documents()] == ["patch-boris"]
    assert {e["member_id"] for e in m.db["member_tags"].documents()} == {boris["_id"]}


class PacedRelay(RecordingRelay):
    """Records, per commit, whether its writer waits for the publishing (`wait`)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[bool, list[str]]] = []

    async def committed(self, commit: Committed) -> None:
        self.waits.append((commit.wait, [w.collection.name for w in commit.written]))
        await super().committed(commit)


async def test_an_import_waits_until_each_chunks_events_are_handed_over(m):
    m.relay = PacedRelay()
    command = usecases.ImportCommand(
        _rows("vera@example.org", "ivan@example.org"), importer.JSONL, file_id="f1", welcome=False
    )
    report = await m.use_cases().import_members(command, may_grant=False)
    assert report.created == 2 and len(m.relay.of_type("member-joined")) == 2
    assert m.relay.waits == [(True, ["members"])]  # one chunk: one publish, awaited


# -- races: the guards and unique values the use cases rely on ----------------------------------


def _another_write_after_reading(m: MembersOnMemory, monkeypatch, write, read="get") -> None:
    """The use case's first read of a member is followed by `write` (another request) before
    its own write: it read a version that is gone."""
    real_get = getattr(m.store, read)
    pending = [write]

    async def read_then_lose_the_race(member_id: str) -> Any:
        doc = await real_get(member_id)
        if pending:
            await pending.pop()()
        return doc

    monkeypatch.setattr(m.store, read, read_then_lose_the_race)


async def test_a_change_that_lost_the_version_race_reads_again_and_lands_after_the_other(
    m, monkeypatch
):
    anna = await join(m)
    _another_write_after_reading(
        m, monkeypatch, lambda: change(m, anna["_id"], display_name="Anna K")
    )
    after = await change(m, anna["_id"], region="kazan")
    assert after["version"] == 3 and after["display_name"] == "Anna K"
    assert after["region"] == "kazan"
    assert [e.data["changes"] for e in m.relay.of_type("member-updated")] == [
        {"display_name": "Anna K"},
        {"region": "kazan"},
    ]


async def test_a_change_racing_the_members_leaving_never_lands_on_the_left_member(m, monkeypatch):
    anna = await join(m)
    _another_write_after_reading(m, monkeypatch, lambda: leave(m, anna["_id"]))
    with pytest.raises(usecases.MemberClosed):
        await change(m, anna["_id"], region="kazan")
    stored = await m.member(anna["_id"])
    assert stored["status"] == "left" and stored["region"] == "moscow"
    assert m.relay.of_type("member-updated") == []


async def test_a_join_whose_referral_code_collides_draws_another_and_keeps_its_entries(
    m, monkeypatch
):
    anna = await join(m)
    codes = iter([anna["referral_code"], "BCDFGHJ"])
    monkeypatch.setattr(domain, "new_referral_code", lambda: next(codes))
    boris = await join(m, email="boris@example.org")
    assert boris["referral_code"] == "BCDFGHJ"
    assert (await m.member(boris["_id"]))["referral_code"] == "BCDFGHJ"
    assert {e["member_id"] for e in m.db["member_tags"].documents()} == {
        anna["_id"],
        boris["_id"],
    }
    assert m.relay.types() == ["member-joined", "member-joined"]


async def test_an_import_row_refused_as_existing_does_not_stop_the_rows_after_it(m):
    await join(m, email="known@example.org")
    report = await m.use_cases().import_members(
        usecases.ImportCommand(
            _rows("known@example.org", "vera@example.org", "ivan@example.org"),
            importer.JSONL,
            file_id="f1",
            welcome=False,
        ),
        may_grant=False,
    )
    assert (report.created, report.existing, report.rejected) == (2, 1, 0)
    imported = m.relay.of_type("member-joined")[1:]
    assert sorted(e.data["contacts"]["email"] for e in imported) == [
        "ivan@example.org",
        "vera@example.org",
    ]


async def test_an_erasure_racing_a_change_reads_again_and_its_tombstone_holds_nothing_of_it(
    m, monkeypatch
):
    anna = await join(m)
    _another_write_after_reading(
        m, monkeypatch, lambda: change(m, anna["_id"], display_name="Anna K"), read="get_whole"
    )
    await leave(m, anna["_id"], erase=True)
    tomb = await m.member(anna["_id"])
    assert tomb["status"] == "erased" and tomb["version"] == 3
    assert "display_name" not in tomb and m.erased == [anna["_id"]]
    # The change's event was never published and names her: it went with the profile.
    assert [e["type"] for e in tomb["outbox"].values()] == ["member-left"]
