"""A subscription declares exactly the event types its subjects bring: the consumer
dead-letters any other type, so a declaration that disagreed would lose events on purpose."""

from __future__ import annotations

import importlib

import pytest

from shared.events import (
    CampaignStarted,
    LevelChanged,
    MemberJoined,
    MemberLeft,
    MemberUpdated,
    ReferralMade,
    carried_by,
    new_event,
)
from shared.subscriptions import Batch, Subscriptions


async def _handle(batch: Batch) -> None:
    del batch


def declare(*, stream: str, subjects: list[str], types: list) -> None:
    subscriptions = Subscriptions("engagement")
    consumer = subscriptions.consumer("engagement-x", stream=stream, subjects=subjects)
    consumer.on(*types)(_handle)
    assert subscriptions.declared


def test_a_handler_must_declare_its_event_types():
    with pytest.raises(TypeError, match="types"):
        declare(stream="MEMBERS", subjects=["members.member-joined.*"])  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="declares no event types"):
        declare(stream="MEMBERS", subjects=["members.member-joined.*"], types=[])


def test_declared_types_must_be_exactly_what_the_subjects_carry():
    with pytest.raises(ValueError, match="carry \\['member-left'\\], which it does not declare"):
        declare(
            stream="MEMBERS",
            subjects=["members.member-joined.*", "members.member-left.*"],
            types=[MemberJoined],
        )
    with pytest.raises(ValueError, match="never carry \\['member-left'\\]"):
        declare(
            stream="MEMBERS", subjects=["members.member-joined.*"], types=[MemberJoined, MemberLeft]
        )
    with pytest.raises(ValueError, match="not published on ENGAGEMENT"):
        declare(
            stream="ENGAGEMENT",
            subjects=["engagement.level-changed.*"],
            types=[LevelChanged, CampaignStarted],
        )
    with pytest.raises(ValueError, match="no service's stream"):
        declare(stream="ELSEWHERE", subjects=["members.>"], types=[MemberJoined])
    declare(
        stream="MEMBERS",
        subjects=["members.>"],
        types=[MemberJoined, MemberUpdated, MemberLeft, ReferralMade],
    )


@pytest.mark.parametrize("service", ["engagement", "campaigns", "notifier"])
def test_every_service_declares_the_types_of_each_of_its_consumers(service):
    declared = importlib.import_module(f"services.{service}.consumers").subscriptions.declared
    assert declared
    for sub in declared:
        carried = {m.event_type for m in carried_by(sub.subjects)}
        assert {m.event_type for m in sub.types} == carried, sub.durable


def _joined(member_id: str) -> MemberJoined:
    return MemberJoined.model_validate({**MemberJoined.example, "member_id": member_id})


def _left(member_id: str) -> MemberLeft:
    return MemberLeft.model_validate({**MemberLeft.example, "member_id": member_id})


def _declared_members() -> tuple[Subscriptions, type]:
    subscriptions = Subscriptions("notifier")
    members = subscriptions.consumer("notifier-x", stream="MEMBERS")

    class Handlers:
        def __init__(self) -> None:
            self.calls: list[tuple[str, list[str]]] = []

        @members.on(MemberJoined)
        async def welcome(self, run: Batch) -> None:
            self.calls.append(("welcome", [d.member_id for _, d in run]))

        @members.on(MemberLeft, MemberUpdated)
        async def gone(self, run: Batch) -> None:
            self.calls.append(("gone", [d.member_id for _, d in run]))

    return subscriptions, Handlers


async def test_a_batch_goes_to_its_handlers_in_stream_order_as_runs_of_one_handler():
    subscriptions, handlers_class = _declared_members()
    handlers = handlers_class()
    [consumer] = subscriptions.bind(handlers)
    datas = [_joined("a"), _joined("b"), _left("c"), _joined("d")]
    batch = [(new_event(d), d) for d in datas]
    await consumer.handle_batch(batch)
    assert handlers.calls == [("welcome", ["a", "b"]), ("gone", ["c"]), ("welcome", ["d"])]
    # The bus's fallback after a failed batch: one event, a run of one, the same handler.
    await consumer.handle(batch[2][0], batch[2][1])
    assert handlers.calls[-1] == ("gone", ["c"])


def test_a_consumers_subjects_follow_from_the_types_it_handles():
    [declared] = _declared_members()[0].declared
    assert set(declared.subjects) == {
        "members.member-joined.*",
        "members.member-left.*",
        "members.member-updated.*",
    }
    assert declared.handlers[MemberUpdated] == "gone"


def test_an_event_type_has_one_handler_per_consumer():
    members = Subscriptions("notifier").consumer("notifier-x", stream="MEMBERS")
    members.on(MemberJoined)(_handle)
    with pytest.raises(ValueError, match="member-joined handled twice"):
        members.on(MemberJoined)(_handle)
