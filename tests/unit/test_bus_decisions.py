"""The bus's decisions without servers: durable settings, retries, batches pulled."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from shared.bus import Consumer, TransientError, consumer_config, retry_delay
from shared.pull import PullLoop
from shared.settings import ServiceSettings
from tests.harness import JsMessage

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


class StoppablePull:
    """A subscription whose first fetch gives `first`, then waits as an idle pull does."""

    def __init__(self, first: list[Msg]) -> None:
        self.first = first
        self.unsubscribed = False

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> list[Msg]:
        if self.first:
            first, self.first = self.first, []
            return first
        await asyncio.sleep(timeout or 60)
        raise nats.errors.TimeoutError

    async def unsubscribe(self) -> None:
        self.unsubscribed = True


def running(pull: StoppablePull, consume: Any) -> PullLoop:
    loop = PullLoop(Consumer("c", "MEMBERS", ["members.>"], ignore), consume)
    loop.subscription = pull
    loop.start()
    return loop


async def test_a_stop_lets_the_batch_in_hand_finish_then_ends_the_subscription():
    started, handled = asyncio.Event(), []

    async def slow(c: Consumer, msgs: list[Msg]) -> None:
        started.set()
        await asyncio.sleep(0.2)
        for msg in msgs:
            await msg.ack()
        handled.extend(msgs)

    pull = StoppablePull([JsMessage("members.member-left.m1", b"{}")])
    loop = running(pull, slow)
    await started.wait()
    await loop.stop()
    assert [m.outcome for m in handled] == ["ack"] and pull.unsubscribed


async def test_a_stop_cuts_an_idle_pull_at_once():
    loop = running(StoppablePull([]), consume)
    await asyncio.sleep(0.05)  # the loop waits in its one-second pull
    started = time.perf_counter()
    await loop.stop()
    assert time.perf_counter() - started < 0.5


async def test_a_batch_cut_after_the_grace_period_is_given_back(monkeypatch: Any):
    monkeypatch.setattr("shared.pull.STOP_GRACE_SECONDS", 0.1)
    started = asyncio.Event()

    async def stuck(c: Consumer, msgs: list[Msg]) -> None:
        await msgs[0].ack()
        started.set()
        await asyncio.sleep(60)

    batch = [JsMessage("members.member-left.m1", b"{}"), JsMessage("members.member-left.m2", b"{}")]
    loop = running(StoppablePull(batch), stuck)
    await started.wait()
    await loop.stop()
    # The settled one stays settled; the other comes back now rather than after ack_wait.
    assert [m.outcome for m in batch] == ["ack", "nak"]
