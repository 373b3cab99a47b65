"""Event handlers registered by event type: a durable consumer declared once, one line per type.

A service declares each durable consumer once, then gives each event type it reads its handler
with one decorator line on a method of its handlers class::

    subscriptions = Subscriptions("notifier")
    members = subscriptions.consumer("notifier-members", stream="MEMBERS")

    class NotifierHandlers:
        @members.on(MemberJoined)
        async def welcome(self, run: Run[MemberJoined]) -> None: ...

        @members.on(MemberUpdated)
        async def update_member(self, run: Run[MemberUpdated]) -> None: ...

The consumer's filter subjects follow from its types (`<service>.<type>.*`), unless it names
wider ones (`subjects=["members.>"]`), which must then carry exactly the types it handles: a
message of any other type is dead-lettered by the consumer (see shared/events/binding.py), so
a filter that disagreed would dead-letter events on purpose or wait for ones that never come.

Runs: the bus hands the consumer every fresh event of a fetched batch (and, after a failure,
the same events one at a time); the kernel cuts them, in stream order, into runs of
consecutive events with the same handler and calls each handler with its run (a list of
`(envelope, data)`, typed to its events), so one event and a thousand take one path. A handler
registered for several types (one bulk write over a mixed batch, on purpose) gets them all in
one run.

From these declarations come the bus's consumers (`Subscriptions.bind`), the NATS
permissions of each service's user, the streams a service waits for and the AsyncAPI document
(`declared`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shared.bus import Consumer
from shared.events import CloudEvent, EventData, carried_by, stream_owner

E = TypeVar("E", bound=EventData)
#: Events of a fetched batch in stream order; `Run[MemberJoined]` those one handler gets.
Run = list[tuple[CloudEvent, E]]
Batch = list[tuple[CloudEvent, EventData]]
BatchHandler = Callable[[Batch], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Awaitable[None]])


@dataclass(frozen=True)
class Subscription:
    """A durable pull consumer as declared: where it reads, and each type's handler."""

    service: str
    durable: str
    stream: str
    subjects: tuple[str, ...]
    #: The event types it handles (the AsyncAPI document's messages); the consumer
    #: dead-letters any other.
    types: tuple[type[EventData], ...]
    #: Each type's handler: a method's name on the object that `bind` is given.
    handlers: Mapping[type[EventData], str]
    #: Events per fetched batch; None takes the service's configured batch size.
    batch_size: int | None = None
    dedupe: bool = True
    ack_wait: float | None = None


@dataclass
class Consuming:
    """One durable consumer being declared: `on` gives each of its event types a handler."""

    service: str
    durable: str
    stream: str
    #: The filter when wider than the types' own subjects; None: the types' subjects.
    wide_subjects: tuple[str, ...] | None = None
    batch_size: int | None = None
    dedupe: bool = True
    ack_wait: float | None = None
    routes: dict[type[EventData], str] = field(default_factory=dict)

    def on(self, *types: type[EventData]) -> Callable[[F], F]:
        """Handle `types` with the decorated method (one run per consecutive events)."""
        owner = stream_owner(self.stream)
        foreign = [m.event_type for m in types if m.service != owner]
        if foreign:
            raise ValueError(f"{self.durable}: {foreign} are not published on {self.stream}")

        def register(fn: F) -> F:
            for t in types:
                if t in self.routes:
                    raise ValueError(f"{self.durable}: {t.event_type} handled twice")
                self.routes[t] = fn.__name__
            return fn

        return register

    @property
    def subjects(self) -> tuple[str, ...]:
        if self.wide_subjects is not None:
            return self.wide_subjects
        return tuple(f"{t.service}.{t.event_type}.*" for t in self.routes)

    def declaration(self) -> Subscription:
        types = tuple(self.routes)
        check_types(self.durable, self.stream, self.subjects, types)
        return Subscription(
            service=self.service,
            durable=self.durable,
            stream=self.stream,
            subjects=self.subjects,
            types=types,
            handlers=dict(self.routes),
            batch_size=self.batch_size,
            dedupe=self.dedupe,
            ack_wait=self.ack_wait,
        )


@dataclass
class Subscriptions:
    """The durable consumers of one service, and the handler of each type they read."""

    service: str
    consumers: list[Consuming] = field(default_factory=list)

    def consumer(
        self,
        durable: str,
        *,
        stream: str,
        subjects: Sequence[str] | None = None,
        batch_size: int | None = None,
        dedupe: bool = True,
        ack_wait: float | None = None,
    ) -> Consuming:
        """Declare a durable consumer of `stream`; its handlers are given with `on`."""
        if not durable.startswith(f"{self.service}-"):
            raise ValueError(f"a durable of {self.service} starts with '{self.service}-'")
        if any(c.durable == durable for c in self.consumers):
            raise ValueError(f"durable {durable} declared twice")
        if stream_owner(stream) is None:
            raise ValueError(f"{durable} reads {stream}, which is no service's stream")
        declared = Consuming(
            service=self.service,
            durable=durable,
            stream=stream,
            wide_subjects=tuple(subjects) if subjects is not None else None,
            batch_size=batch_size,
            dedupe=dedupe,
            ack_wait=ack_wait,
        )
        self.consumers.append(declared)
        return declared

    @property
    def declared(self) -> list[Subscription]:
        """Every consumer as declared (checked: its subjects carry exactly its types)."""
        return [c.declaration() for c in self.consumers]

    def bind(self, handlers: Any, *, batch_size: int = 100) -> list[Consumer]:
        """The bus's consumers, each dispatching its events to its methods of `handlers`."""
        consumers = []
        for sub in self.declared:
            dispatch = dispatcher(sub, handlers)
            consumers.append(
                Consumer(
                    name=sub.durable,
                    stream=sub.stream,
                    subjects=list(sub.subjects),
                    handle=_one_at_a_time(dispatch),
                    handle_batch=dispatch,
                    batch_size=sub.batch_size or batch_size,
                    dedupe=sub.dedupe,
                    ack_wait=sub.ack_wait,
                    types=sub.types,
                )
            )
        return consumers

    @property
    def streams(self) -> list[str]:
        """The streams this service reads: it waits for each before it is ready."""
        return list(dict.fromkeys(c.stream for c in self.consumers))


def dispatcher(sub: Subscription, handlers: Any) -> BatchHandler:
    """The consumer's batch handler: each run of `sub`'s events to its method of `handlers`
    (looked up now, so that it is the method of `handlers` as given)."""
    names = sub.handlers
    methods: dict[str, BatchHandler] = {n: getattr(handlers, n) for n in set(names.values())}

    async def dispatch(batch: Batch) -> None:
        for name, run in runs(batch, names):
            await methods[name](run)

    dispatch.__name__ = sub.durable
    return dispatch


def runs(batch: Batch, handlers: Mapping[type[EventData], str]) -> Iterator[tuple[str, Batch]]:
    """`batch` in stream order as runs of consecutive events with the same handler."""
    current: Batch = []
    name = ""
    for item in batch:
        handler = handlers[type(item[1])]
        if current and handler != name:
            yield name, current
            current = []
        name = handler
        current.append(item)
    if current:
        yield name, current


def check_types(
    durable: str, stream: str, subjects: Sequence[str], types: Sequence[type[EventData]]
) -> None:
    """Refuse a declaration whose types are not exactly what its subjects bring from `stream`."""
    if not types:
        raise ValueError(f"{durable} declares no event types")
    owner = stream_owner(stream)
    if owner is None:
        raise ValueError(f"{durable} reads {stream}, which is no service's stream")
    foreign = [m.event_type for m in types if m.service != owner]
    if foreign:
        raise ValueError(f"{durable}: {foreign} are not published on {stream}")
    carried = {m.event_type for m in carried_by(subjects) if m.service == owner}
    declared = {m.event_type for m in types}
    if declared - carried:
        raise ValueError(f"{durable}: its subjects never carry {sorted(declared - carried)}")
    if carried - declared:
        raise ValueError(
            f"{durable}: its subjects carry {sorted(carried - declared)}, which it does not "
            "declare (they would be dead-lettered): declare them or narrow the subjects"
        )


def _one_at_a_time(dispatch: BatchHandler) -> Callable[[CloudEvent, EventData], Awaitable[None]]:
    async def handle(envelope: CloudEvent, data: EventData) -> None:
        await dispatch([(envelope, data)])

    handle.__name__ = getattr(dispatch, "__name__", "handle")
    return handle
