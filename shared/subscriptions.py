"""One declaration per event handler: where it reads and what it handles.

A service declares each durable consumer on the handler itself::

    subscriptions = Subscriptions("engagement")

    class MemberEvents:
        @subscriptions.handler(
            "engagement-members",
            stream="MEMBERS",
            subjects=["members.member-joined.>", "members.member-left.>"],
            types=[MemberJoined, MemberLeft],
        )
        async def on_members(self, batch: Batch) -> None: ...

`types` is required and must be exactly the types its subjects carry, all published by the
service owning `stream`: a message of any other type is dead-lettered by the consumer (see
shared/events/binding.py), so a declaration that disagreed with its subjects would dead-letter
events on purpose or wait for ones that never come.

The handler always takes a batch (a list of `(envelope, data)` in stream order); the bus hands
it every fresh event of a fetched batch, and on failure the same handler one event at a time, so
there is one code path for one event and for a thousand. From these declarations come the bus's
consumers (`Subscriptions.bind`), the NATS permissions of each service's user, the streams a
service waits for and the AsyncAPI document (`declared`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.bus import Consumer
from shared.events import CloudEvent, EventData, carried_by, stream_owner

Batch = list[tuple[CloudEvent, EventData]]
BatchHandler = Callable[[Batch], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """A durable pull consumer as declared beside its handler."""

    service: str
    durable: str
    stream: str
    subjects: tuple[str, ...]
    #: The event types the handler acts on (the AsyncAPI document's messages); the consumer
    #: dead-letters any other.
    types: tuple[type[EventData], ...]
    #: Events per fetched batch; None takes the service's configured batch size.
    batch_size: int | None = None
    dedupe: bool = True
    ack_wait: float | None = None
    #: The handler's name on the object that `bind` is given.
    method: str = ""


@dataclass
class Subscriptions:
    """The subscriptions of one service, collected from its handler decorators."""

    service: str
    declared: list[Subscription] = field(default_factory=list)

    def handler(
        self,
        durable: str,
        *,
        stream: str,
        subjects: Sequence[str],
        types: Iterable[type[EventData]],
        batch_size: int | None = None,
        dedupe: bool = True,
        ack_wait: float | None = None,
    ) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
        if not durable.startswith(f"{self.service}-"):
            raise ValueError(f"a durable of {self.service} starts with '{self.service}-'")
        types = tuple(types)
        check_types(durable, stream, subjects, types)

        def mark(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
            sub = Subscription(
                service=self.service,
                durable=durable,
                stream=stream,
                subjects=tuple(subjects),
                types=types,
                batch_size=batch_size,
                dedupe=dedupe,
                ack_wait=ack_wait,
                method=fn.__name__,
            )
            if any(s.durable == durable for s in self.declared):
                raise ValueError(f"durable {durable} declared twice")
            self.declared.append(sub)
            return fn

        return mark

    def bind(self, handlers: Any, *, batch_size: int = 100) -> list[Consumer]:
        """The bus's consumers, each calling its declared method on `handlers`."""
        consumers = []
        for sub in self.declared:
            method: BatchHandler = getattr(handlers, sub.method)
            consumers.append(
                Consumer(
                    name=sub.durable,
                    stream=sub.stream,
                    subjects=list(sub.subjects),
                    handle=_one_at_a_time(method),
                    handle_batch=method,
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
        return list(dict.fromkeys(s.stream for s in self.declared))


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


def _one_at_a_time(method: BatchHandler) -> Callable[[CloudEvent, EventData], Awaitable[None]]:
    async def handle(envelope: CloudEvent, data: EventData) -> None:
        await method([(envelope, data)])

    handle.__name__ = getattr(method, "__name__", "handle")
    return handle
