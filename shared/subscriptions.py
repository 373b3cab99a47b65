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
from shared.events import CloudEvent, EventData

Batch = list[tuple[CloudEvent, EventData]]
BatchHandler = Callable[[Batch], Awaitable[None]]

_MARK = "__sarafan_subscription__"


@dataclass(frozen=True)
class Subscription:
    """A durable pull consumer as declared beside its handler."""

    service: str
    durable: str
    stream: str
    subjects: tuple[str, ...]
    #: The event types the handler acts on (the AsyncAPI document's messages).
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
        types: Iterable[type[EventData]] = (),
        batch_size: int | None = None,
        dedupe: bool = True,
        ack_wait: float | None = None,
    ) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
        if not durable.startswith(f"{self.service}-"):
            raise ValueError(f"a durable of {self.service} starts with '{self.service}-'")

        def mark(fn: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
            sub = Subscription(
                service=self.service,
                durable=durable,
                stream=stream,
                subjects=tuple(subjects),
                types=tuple(types),
                batch_size=batch_size,
                dedupe=dedupe,
                ack_wait=ack_wait,
                method=fn.__name__,
            )
            if any(s.durable == durable for s in self.declared):
                raise ValueError(f"durable {durable} declared twice")
            self.declared.append(sub)
            setattr(fn, _MARK, sub)
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


def _one_at_a_time(method: BatchHandler) -> Callable[[CloudEvent, EventData], Awaitable[None]]:
    async def handle(envelope: CloudEvent, data: EventData) -> None:
        await method([(envelope, data)])

    handle.__name__ = getattr(method, "__name__", "handle")
    return handle
