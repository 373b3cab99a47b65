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
