"""The bus's decisions without servers: durable settings, retries, batches pulled."""

from __future__ import annotations

from typing import Any

import nats.errors
from nats.aio.msg import Msg

from shared.bus import Consumer, TransientError, consumer_config, retry_delay
from shared.pull import PullLoop
from shared.settings import ServiceSettings

SETTINGS = ServiceSettings(SARAFAN_MAX_DELIVER=4, SARAFAN_RETRY_BACKOFF_SECONDS=0.5)


async def ignore(event: Any, data: Any) -> None:
    return None


def test_a_durable_gets_the_ack_wait_max_deliver_and_filters_it_was_declared_with():
    one = consumer_config(Consumer("c1", "MEMBERS", ["members.>"], ignore, ack_wait=7), SETTINGS)
    assert (one.durable_name, one.ack_wait, one.max_deliver) == ("c1", 7, 4 + 2)
    assert one.filter_subject == "members.>" and one.filter_subjects is None
    assert one.max_ack_pending == 1000
    two = consumer_config(
        Consumer("c2", "MEMBERS", ["members.a.>", "members.b.>"], ignore, batch_size=500),
        SETTINGS,
    )
    assert two.filter_subject is None and two.filter_subjects == ["members.a.>", "members.b.>"]
    assert two.ack_wait == SETTINGS.ack_wait_seconds
    assert two.max_ack_pending == 2000  # room for four batches in hand


def test_an_outage_is_retried_with_doubling_delays_until_the_last_delivery():
    outage = TransientError("database away")
    assert [retry_delay(outage, n, SETTINGS) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert retry_delay(outage, 4, SETTINGS) is None  # the last delivery: to the DLQ
    assert retry_delay(nats.errors.TimeoutError(), 1, SETTINGS) == 0.5


def test_a_bug_goes_to_the_dlq_at_the_first_delivery():
    assert retry_delay(KeyError("member_id"), 1, SETTINGS) is None
    assert retry_delay(ValueError("poison"), 1, SETTINGS) is None


def jetstream_msg(seq: int, pending: int) -> Msg:
    reply = f"$JS.ACK.MEMBERS.c.1.{seq}.{seq}.1700000000000000000.{pending}"
    return Msg(_client=None, subject=f"members.member-left.m{seq}", reply=reply)


class FakePull:
    """A pull subscription that answers each fetch from a script (messages or an error)."""

    def __init__(self, *answers: list[Msg] | BaseException) -> None:
        self.answers = list(answers)
        self.fetched: list[int] = []

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> list[Msg]:
        self.fetched.append(batch)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer[:batch]


async def consume(c: Consumer, msgs: list[Msg]) -> None:
    return None


def puller(pull: FakePull, batch_size: int = 10) -> PullLoop:
    loop = PullLoop(Consumer("c", "MEMBERS", ["members.>"], ignore, batch_size=batch_size), consume)
    loop.subscription = pull
    return loop


async def test_a_lone_event_is_handed_over_without_waiting_to_fill_a_batch():
    pull = FakePull([jetstream_msg(1, pending=0)])
    assert [m.metadata.sequence.stream for m in await puller(pull)._next_batch()] == [1]
    assert pull.fetched == [1]  # nothing pending: no second pull


async def test_a_backlog_is_topped_up_to_the_batch_size():
    pull = FakePull(
        [jetstream_msg(1, pending=30)],
        [jetstream_msg(n, pending=30 - n) for n in range(2, 6)],
        [jetstream_msg(n, pending=30 - n) for n in range(6, 20)],
    )
    msgs = await puller(pull, batch_size=10)._next_batch()
    assert [m.metadata.sequence.stream for m in msgs] == list(range(1, 11))
    assert pull.fetched == [1, 9, 5]


async def test_a_failed_top_up_hands_over_the_messages_in_hand():
    pull = FakePull([jetstream_msg(1, pending=5)], TimeoutError())
    msgs = await puller(pull)._next_batch()
    assert [m.metadata.sequence.stream for m in msgs] == [1]


async def test_an_idle_pull_gives_an_empty_batch():
    assert await puller(FakePull(nats.errors.TimeoutError()))._next_batch() == []
