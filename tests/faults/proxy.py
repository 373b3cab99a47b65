"""A small asyncio TCP proxy between the services and NATS that misbehaves on demand: it adds
latency, drops every connection, or half-opens them (the server side is closed while the
client side stays open and silent, as after a NAT or firewall forgets a flow)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sarafan.embedded import LOCALHOST, free_port

T = TypeVar("T")


@dataclass(eq=False)
class _Pipe:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    silent: bool = False  # half-open: bytes from either side go nowhere
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class ChaosProxy:
    """Listens on 127.0.0.1:`port` and forwards to `target_port`."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.latency = 0.0  # seconds added to every chunk, each way
        self.connections = 0
        self._pipes: set[_Pipe] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOCALHOST, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_all()
        for pipe in list(self._pipes):
            for task in pipe.tasks:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def drop_all(self) -> int:
        """Abort every connection at once (the client sees a reset); returns how many."""
        pipes = list(self._pipes)
        for pipe in pipes:
            self._close(pipe)
        return len(pipes)

    def half_open_all(self) -> int:
        """Close the server side of every connection but keep the client side open and say
        nothing more to it; returns how many."""
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.silent = True
            pipe.upstream.transport.abort()
        return len(pipes)

    def release_half_open(self) -> int:
        """The middlebox finally resets the client side of half-open connections."""
        pipes = [p for p in self._pipes if p.silent]
        for pipe in pipes:
            self._close(pipe)
        return len(pipes)

    def _close(self, pipe: _Pipe) -> None:
        pipe.client.transport.abort()
        pipe.upstream.transport.abort()
        self._pipes.discard(pipe)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(LOCALHOST, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        pipe = _Pipe(writer, up_writer)
        self._pipes.add(pipe)
        pipe.tasks = [
            asyncio.create_task(self._pump(pipe, reader, up_writer)),
            asyncio.create_task(self._pump(pipe, up_reader, writer)),
        ]

    async def _pump(
        self,
        pipe: _Pipe,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if pipe.silent:
                    continue  # half-open: swallowed, and the sender is told nothing
                if self.latency:
                    await asyncio.sleep(self.latency)
                if pipe.silent:
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        if not pipe.silent:
            self._close(pipe)


class ProxyThread:
    """The proxy on its own event loop in a thread, so it keeps forwarding while the test's
    thread blocks (starting the stack waits for the services, which connect through it)."""

    def __init__(self, target_port: int) -> None:
        self.proxy = ChaosProxy(target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.proxy.url

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        self.call(self.proxy.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.proxy.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def call(self, work: Coroutine[Any, Any, T] | Callable[[], T]) -> T:
        """Run a coroutine, or a plain call, on the proxy's loop and return its result."""
        if not asyncio.iscoroutine(work):
            fn = work

            async def wrapped() -> T:
                return fn()  # type: ignore[operator,no-any-return]

            work = wrapped()
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(10)
