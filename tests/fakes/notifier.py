"""The notifier wired on in-memory fakes: its real store over `MemoryDatabase`, its real unit of
work (`NotifierUnitOfWork`, owning its repositories) over a relay that only records what it is
handed, a bus that records erasures, a channel
that answers what it is told; its use cases (`NotifierUseCases`) as `notifier`. For the use-case
tests (tests/unit/test_notifier_usecases.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from services.notifier.channels import Outcome, Outgoing, Sent
from services.notifier.consumers import NotifierHandlers, subscriptions
from services.notifier.dispatcher import Dispatcher, DispatchSettings
from services.notifier.fanout import Fanout, Limits
from services.notifier.reminder_job import Reminders
from services.notifier.store import NotifierStore, NotifierUnitOfWork
from services.notifier.usecases import NotifierUseCases
from shared.metrics import Metrics
from shared.skipped import SkippedDocuments
from tests.fakes.memory import MemoryDatabase
from tests.fakes.relay import RecordingRelay
from tests.helpers import MovableClock


@dataclass
class RecordingBus:
    erased: list[tuple[str, str]] = field(default_factory=list)

    async def erase(self, stream: str, subject: str) -> int:
        self.erased.append((stream, subject))
        return 0


class ScriptedChannel:
    """A push channel whose answers are given in advance (Sent once they run out)."""

    def __init__(self, name: str, outcomes: Iterable[Outcome] = ()) -> None:
        self.name = name
        self.outcomes = list(outcomes)
        self.sent: list[Outgoing] = []

    async def send(self, message: Outgoing) -> Outcome:
        self.sent.append(message)
        return self.outcomes.pop(0) if self.outcomes else Sent()

    async def close(self) -> None:
        return None


class Consumers:
    """The notifier's consumers as the bus calls them: each takes a batch, which the kernel
    cuts into runs for the handlers of its types (shared/subscriptions.py)."""

    def __init__(self, handlers: NotifierHandlers) -> None:
        bound = {c.name: c.handle_batch for c in subscriptions.bind(handlers)}
        self.on_members = bound["notifier-members"]
        self.on_engagement = bound["notifier-engagement"]
        self.on_campaigns = bound["notifier-campaigns"]
        self.on_activities = bound["notifier-activities"]


@dataclass
class FakeNotifier:
    db: MemoryDatabase
    store: NotifierStore
    relay: RecordingRelay
    bus: RecordingBus
    clock: MovableClock
    metrics: Metrics
    notifier: NotifierUseCases
    handlers: Consumers
    dispatcher: Dispatcher
    channels: dict[str, ScriptedChannel]

    def unit_of_work(self) -> NotifierUnitOfWork:
        """A unit of work of the service's kind (its commits handed to the recording relay)."""
        return NotifierUnitOfWork(self.relay, self.store)


def fake_notifier(*channels: ScriptedChannel, daily_budget: int = 5) -> FakeNotifier:
    db = MemoryDatabase("notifier")
    store = NotifierStore(db)  # type: ignore[arg-type]
    relay, bus, clock = RecordingRelay(), RecordingBus(), MovableClock()
    metrics = Metrics("notifier")
    by_name = {c.name: c for c in channels}

    def unit_of_work() -> NotifierUnitOfWork:
        return NotifierUnitOfWork(relay, store)

    settings = DispatchSettings(
        max_attempts=3,
        retry_base_seconds=1,
        retry_max_seconds=10,
        poll_seconds=0.01,
        claim_batch=50,
        concurrency=4,
        lease=timedelta(seconds=60),
    )
    dispatcher = Dispatcher(store, unit_of_work, dict(by_name), settings, metrics, clock)  # type: ignore[arg-type]
    fanout = Fanout(
        store,
        unit_of_work,
        metrics,
        frozenset(by_name),
        Limits(daily_budget=daily_budget, fanout_batch=2),
        clock,
        dispatcher.wake,
        SkippedDocuments("notifier", metrics.registry),
    )
    notifier = NotifierUseCases(store, fanout, bus, Reminders(store, fanout, metrics, 2))
    return FakeNotifier(
        db,
        store,
        relay,
        bus,
        clock,
        metrics,
        notifier,
        Consumers(NotifierHandlers(notifier)),
        dispatcher,
        by_name,
    )
