"""The consumer wrapper driven by tests/harness.py (a recording JetStream at the bus's port,
the wrapper the pull loop calls): no servers, milliseconds. (The file's name dates from when
the harness ran FastStream's TestNatsBroker.)"""

from __future__ import annotations

import json
from typing import Any

from shared.bus import Bus, Consumer
from shared.events import REGISTRY, CloudEvent, EventData, new_event
from shared.metrics import Metrics
from shared.settings import ServiceSettings
from tests.fakes.memory import MemoryDatabase
from tests.harness import BusHarness

SETTINGS = ServiceSettings(SARAFAN_MAX_DELIVER=3, SARAFAN_RETRY_BACKOFF_SECONDS=0.5)


def joined(member_id: str) -> CloudEvent:
    model = REGISTRY["member-joined"]
    return new_event(model.model_validate({**model.example, "member_id": member_id}))


class Recorder:
    """A consumer's handlers: what each got, failing for the member ids it is told to."""

    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.one: list[str] = []
        self.batches: list[list[str]] = []
        self.fail = fail or {}

    async def handle(self, envelope: CloudEvent, data: EventData) -> None:
        if envelope.subject in self.fail:
            raise self.fail[envelope.subject]
        self.one.append(envelope.subject)

    async def handle_batch(self, batch: list[tuple[CloudEvent, EventData]]) -> None:
        if any(e.subject in self.fail for e, _ in batch):
            raise RuntimeError("one of them fails")
        self.batches.append([e.subject for e, _ in batch])


def make_bus(recorder: Recorder, **consumer: Any) -> Bus:
    bus = Bus("engagement", SETTINGS, Metrics("engagement"), MemoryDatabase())
    bus.consumers.append(
        Consumer(
            "engagement-members",
            "MEMBERS",
            ["members.member-joined.*"],
            recorder.handle,
            handle_batch=recorder.handle_batch,
            **consumer,
        )
    )
    return bus


def consumed(bus: Bus, outcome: str) -> float:
    return bus.metrics.events_consumed.labels("engagement", "member-joined", outcome)._value.get()


async def test_a_published_event_reaches_the_handler_and_is_acked() -> None:
    recorder = Recorder()
    bus = make_bus(recorder)
    async with BusHarness(bus) as harness:
        msg = await harness.publish(joined("m1"))
    assert recorder.one == ["m1"] and msg.outcome == "ack"
    assert harness.published[0].headers["Nats-Msg-Id"] == msg.headers["Nats-Msg-Id"]
    assert await bus.processed.count_documents({}) == 1  # deduped from now on
    assert consumed(bus, "ok") == 1


async def test_a_bad_message_goes_to_the_dlq_alone() -> None:
    recorder = Recorder()
    bus = make_bus(recorder)
    async with BusHarness(bus) as harness:
        batch = await harness.deliver(
            "engagement-members",
            [joined("m1"), ("members.member-joined.m2", b"{not json"), joined("m3")],
        )
        published_bad = await harness.publish_raw("members.member-joined.m4", b"[]")
    assert [m.outcome for m in batch] == ["ack", "ack", "ack"]  # the bad one after its copy
    assert recorder.batches == [["m1", "m3"]]  # the valid ones, in one batch
    assert published_bad.outcome == "ack"
    first, second = harness.dead_letters
    assert first.subject == "dlq.engagement.engagement-members.members.member-joined.m2"
    assert first.data == b"{not json"
    assert first.headers["Sarafan-Dlq-Consumer"] == "engagement-members"
    assert first.headers["Sarafan-Dlq-Error"].startswith("invalid event: body is not JSON")
    assert first.headers["Sarafan-Dlq-Sequence"] == str(batch[1].seq)
    assert second.headers["Sarafan-Dlq-Error"] == "invalid event: body is not a JSON object"


async def test_a_duplicate_is_skipped() -> None:
    recorder = Recorder()
    bus = make_bus(recorder)
    event = joined("m1")
    async with BusHarness(bus) as harness:
        first = await harness.publish(event)
        again = await harness.publish(event)  # the relay re-publishing after a crash
        twice = await harness.deliver("engagement-members", [joined("m2")] * 2)
    assert recorder.one == ["m1", "m2"] and recorder.batches == []
    assert (first.outcome, again.outcome) == ("ack", "ack")
    assert [m.outcome for m in twice] == ["ack", "ack"]
    assert consumed(bus, "duplicate") == 2


async def test_a_failure_is_retried_with_backoff_then_dead_lettered() -> None:
    recorder = Recorder(fail={"m1": TimeoutError("database away")})
    bus = make_bus(recorder)
    async with BusHarness(bus) as harness:
        first = await harness.publish(joined("m1"))
        second = (await harness.deliver("engagement-members", [first.again()]))[0]
        last = (await harness.deliver("engagement-members", [second.again()]))[0]
    assert (first.outcome, first.nak_delay) == ("nak", 0.5)
    assert (second.outcome, second.nak_delay) == ("nak", 1.0)
    assert last.outcome == "ack"  # after its copy went to the DLQ
    [dead] = harness.dead_letters
    assert dead.headers["Sarafan-Dlq-Deliveries"] == "3"
    assert json.loads(dead.data)["subject"] == "m1"
    assert recorder.one == []


async def test_a_failing_batch_falls_back_to_one_by_one() -> None:
    recorder = Recorder(fail={"m2": KeyError("member_id")})
    bus = make_bus(recorder)
    async with BusHarness(bus) as harness:
        batch = await harness.deliver("engagement-members", [joined(f"m{i}") for i in (1, 2, 3)])
    assert recorder.batches == [] and recorder.one == ["m1", "m3"]
    assert [m.outcome for m in batch] == ["ack", "ack", "ack"]
    [dead] = harness.dead_letters  # a bug: no retry would change it
    assert dead.headers["Sarafan-Dlq-Error"].startswith("KeyError")


async def test_a_consumer_of_several_subjects_gets_each() -> None:
    recorder = Recorder()
    bus = Bus("engagement", SETTINGS, Metrics("engagement"), MemoryDatabase())
    bus.consumers.append(
        Consumer(
            "engagement-members",
            "MEMBERS",
            ["members.member-joined.*", "members.member-left.*"],
            recorder.handle,
        )
    )
    left = REGISTRY["member-left"]
    async with BusHarness(bus) as harness:
        await harness.publish(joined("m1"))
        await harness.publish(new_event(left.model_validate({**left.example, "member_id": "m2"})))
        await harness.publish_raw("members.member-updated.m3", b"{}")  # not its subject
    assert recorder.one == ["m1", "m2"] and harness.dead_letters == []


async def test_a_deeply_nested_poison_is_dead_lettered_alone_and_its_batch_is_handled() -> None:
    """`[[[[…` makes json raise RecursionError: that message goes to the DLQ, the others of its
    batch are handled and acked in the same pass (none is left for redelivery)."""
    recorder = Recorder()
    bus = make_bus(recorder)
    async with BusHarness(bus) as harness:
        batch = await harness.deliver(
            "engagement-members",
            [joined("m1"), ("members.member-joined.m2", b"[" * 100_000), joined("m3")],
        )
    assert [m.outcome for m in batch] == ["ack", "ack", "ack"]
    assert recorder.batches == [["m1", "m3"]]
    [dead] = harness.dead_letters
    assert dead.subject == "dlq.engagement.engagement-members.members.member-joined.m2"
    assert "nests deeper" in dead.headers["Sarafan-Dlq-Error"]


async def test_an_event_not_bound_to_its_subject_and_producer_is_dead_lettered() -> None:
    left = REGISTRY["member-left"]
    wrong_type = new_event(left.model_validate({**left.example, "member_id": "m2"}))
    foreign = joined("m3").model_copy(update={"source": "/services/engagement"})
    recorder = Recorder()
    bus = make_bus(recorder)
    async with BusHarness(bus) as harness:
        batch = await harness.deliver(
            "engagement-members",
            [
                ("members.member-joined.m2", wrong_type.to_json()),  # a member-left body
                foreign,
                ("members.member-joined.m5", joined("m4").to_json()),  # m4's event on m5's
                joined("m1"),
            ],
        )
    assert [m.outcome for m in batch] == ["ack"] * 4
    assert recorder.one == ["m1"] and recorder.batches == []
    reasons = [d.headers["Sarafan-Dlq-Error"] for d in harness.dead_letters]
    assert len(reasons) == 3
    assert "'member-left' is not one this consumer handles (member-joined)" in reasons[0]
    assert "source '/services/engagement' is not /services/members" in reasons[1]
    assert "arrived on 'members.member-joined.m5'" in reasons[2]
    assert consumed(bus, "ok") == 1
