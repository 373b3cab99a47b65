"""The seam between the unit of work and the relay (shared/outbox_port.py): the real relay and
the fast tests' recording relay both offer exactly what the unit of work calls, with the same
signatures, so a test on the fake exercises the calls production makes."""

from __future__ import annotations

import inspect

import pytest

from shared.outbox import Relay
from shared.outbox_port import Publisher
from tests.fakes.relay import RecordingRelay

PORT = [name for name in vars(Publisher) if not name.startswith("_")]


def test_the_port_is_one_call_for_a_commit_and_one_for_learning_a_collection() -> None:
    assert sorted(PORT) == ["committed", "watch"]


@pytest.mark.parametrize("implementation", [Relay, RecordingRelay])
@pytest.mark.parametrize("name", PORT)
def test_relay_and_recording_relay_match_the_port_s_signatures(implementation, name) -> None:
    wanted, found = getattr(Publisher, name), getattr(implementation, name)
    assert inspect.iscoroutinefunction(found) == inspect.iscoroutinefunction(wanted)
    shape = [(p.name, p.kind, p.default) for p in inspect.signature(wanted).parameters.values()]
    assert [
        (p.name, p.kind, p.default) for p in inspect.signature(found).parameters.values()
    ] == shape
