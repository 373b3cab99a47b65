"""The notifier wired on in-memory fakes: its real store over `MemoryDatabase`, a real unit of
work over a relay that only records what it is handed, a bus that records erasures, a channel
that answers what it is told. For the use-case tests (tests/unit/test_notifier_usecases.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from services.notifier.channels import Outcome, Outgoing, Sent
from services.notifier.consumers import NotifierHandlers, subscriptions
from services.notifier.dispatcher import Dispatcher, DispatchSettings
from services.notifier.fanout import Fanout, Limits
from services.notifier.reminder_job import Reminders
from services.notifier.store import NotifierStore
from services.notifier.usecases import Notifier
from shared.events import CloudEvent
from shared.metrics import Metrics
from shared.skipped import SkippedDocuments
from shared.uow import UnitOfWork
from tests.fakes.memory import MemoryDatabase
from tests.helpers import MovableClock


class RecordingRelay:
    """What a commit hands the relay: the events of each written document, in order."""

    def __init__(self) -> None:
        self.watched: set[str] = set()
        self.kicks: list[tuple[str, Any, list[CloudEvent] | None]] = []
        self.flushes = 0  # one publishing round per commit that wrote documents with events

    def watch(self, collection: Any) -> None:
        self.watched.add(collection.name)

    def kick(self, collection: Any, doc_id: Any, events: list[CloudEvent] | None = None) -> None:
        self.flushes += 1
        self.kicks.append((collection.name, doc_id, events))

    def kick_many(self, collection: Any, docs: dict[Any, list[CloudEvent] | None]) -> None:
        self.flushes += 1
        self.kicks += [(collection.name, d, e) for d, e in docs.items()]

    def watch_batches(self) -> None:
        self.watched.add("outbox_batches")

    def kick_batch(self, collection: Any, batch_id: str, docs: dict[Any, list[CloudEvent]]) -> None:
        """A batch's events (the outbox's batch form): one publishing round, as `kick_many`."""
        self.kick_many(collection, dict(docs))

    def forget(self) -> None:
        """Start counting afresh (after a test's set-up)."""
        self.kicks.clear()
        self.flushes = 0

    def published(self) -> list[CloudEvent]:
        return [e for _, _, events in self.kicks for e in events or ()]

    def types(self) -> list[str]:
        return [e.type for e in self.published()]


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
    notifier: Notifier
    handlers: Consumers
    dispatcher: Dispatcher
    channels: dict[str, ScriptedChannel]


def fake_notifier(*channels: ScriptedChannel, daily_budget: int = 5) -> FakeNotifier:
    db = MemoryDatabase("notifier")
    store = NotifierStore(db)  # type: ignore[arg-type]
    relay, bus, clock = RecordingRelay(), RecordingBus(), MovableClock()
    metrics = Metrics("notifier")
    by_name = {c.name: c for c in channels}

    def unit_of_work() -> UnitOfWork:
        return UnitOfWork(relay)  # type: ignore[arg-type]

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
    notifier = Notifier(store, fanout, bus, Reminders(store, fanout, metrics, 2))
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
