"""The service kernel: clients, bus, outbox relay, jobs and the FastAPI app around them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from shared import tracing
from shared.asyncapi import asyncapi_document
from shared.bus import PROCESSED_TTL, Bus, Consumer
from shared.clock import Clock, utcnow
from shared.events import EVENT_MODELS, CloudEvent, EventData, MemberLeft
from shared.http import (
    IDEMPOTENCY_TTL,
    AccessLog,
    BodyLimit,
    KernelMiddleware,
    RouteScopes,
    WriteLimits,
    ensure_idempotency_indexes,
    install_error_handlers,
    install_openapi,
    operation_id,
)
from shared.keys import KeyRing
from shared.logs import configure_logging
from shared.metrics import Metrics
from shared.outbox import Relay
from shared.probes import Heartbeat, Liveness, Readiness, readiness_answer
from shared.retry import retry
from shared.scrub import Scrubber
from shared.settings import ServiceSettings
from shared.skipped import SkippedDocuments
from shared.store import connect_mongo, epoch_ms, ping
from shared.subscriptions import Subscriptions
from shared.uow import UnitOfWork

log = logging.getLogger("sarafan.service")

Hook = Callable[[], Awaitable[None]]
#: How often old processed-event and Idempotency-Key records are deleted (see Runtime.expire).
EXPIRE_EVERY = timedelta(hours=1)
#: How long /readyz waits for MongoDB's answer: less than the probes' timeout (3 s).
READY_PING_SECONDS = 2.0


StoreT = TypeVar("StoreT")
ContextT = TypeVar("ContextT")


def context_of(kind: type[ContextT]) -> Callable[[Request], Awaitable[ContextT]]:
    """The FastAPI dependency that gives a route its service's context (`create_app(...,
    context=...)`), typed: `MembersDep = Annotated[Members, Depends(context_of(Members))]`.
    A coroutine, so FastAPI calls it on the event loop: a plain function would be handed to
    its thread pool, a thread hop on every request (3 % of the members service's samples
    in a profile under a join load; the join rate did not move measurably)."""

    async def dependency(request: Request) -> ContextT:
        context = request.app.state.context
        if not isinstance(context, kind):
            raise TypeError(f"the app's context is {type(context).__name__}, not {kind.__name__}")
        return context

    dependency.__name__ = f"{kind.__name__.lower()}_of"
    return dependency


@dataclass(frozen=True)
class Composed(Generic[StoreT]):
    """A service as its composition root (`compose` in its app.py) made it: the app, and the
    parts a test or a benchmark drives directly (the store, the scans a test runs at a time it
    chooses), so nothing on `app.state` is there only for them."""

    app: FastAPI
    store: StoreT
    jobs: Any = None


class Runtime:
    """Everything one service process holds: settings, MongoDB, NATS, outbox relay, jobs."""

    def __init__(self, service: str, settings: ServiceSettings, clock: Clock = utcnow) -> None:
        self.service = service
        self.settings = settings
        #: The service's one clock: its use cases, handlers and jobs read the time from it, and
        #: no time an event states is read as later than it (plus a tolerance). A test gives
        #: the service a clock it moves (`build(settings, clock=...)`).
        self.clock = clock
        tracing.configure(service)  # the OTEL_* variables, once per process
        self.metrics = Metrics(service)
        self.mongo = connect_mongo(settings.mongodb_url)
        self.db = self.mongo[settings.database_name(service)]
        self.bus = Bus(service, settings, self.metrics, self.db)
        self.relay = Relay(self.bus, [], self.metrics, settings.outbox_sweep_seconds)
        #: The API keys every service accepts (the bucket watched once NATS is connected).
        self.keys = KeyRing(settings.api_token)
        #: Each key's write rate in this process (shared/http/rate_limit.py).
        self.limits = WriteLimits(settings.key_rate_per_minute)
        self.bus.on_connected.append(self._watch_keys)
        #: What it publishes (for /asyncapi): every event type whose producer it is.
        self.publishes: list[type[EventData]] = [m for m in EVENT_MODELS if m.service == service]
        #: Stored documents that lists and jobs left out (`sarafan_documents_skipped_total`).
        self.skipped = SkippedDocuments(service, self.metrics.registry)
        #: Scrubs the embedded store's files of what an erasure removed (shared/scrub.py).
        self.scrubber = Scrubber(self.db, settings.erasure_scrub_seconds)
        self.init_hooks: list[Hook] = []
        self.jobs: list[Callable[[], Awaitable[None]]] = []
        self.initialised = asyncio.Event()
        #: The event loop's heartbeat, watched from a thread (/healthz: shared/probes.py).
        self.heartbeat = Heartbeat(service)
        self._tasks: list[asyncio.Task[Any]] = []

    async def _watch_keys(self) -> None:
        if self.bus.js is not None:
            self.keys.start(self.bus.js)

    def subscribe(self, subscriptions: Subscriptions, handlers: Any) -> None:
        """Consume every subscription the service declared, with `handlers` (the object whose
        methods carry the declarations), events' times read against the service's clock."""
        if subscriptions.service != self.service:
            raise ValueError(f"{subscriptions.service}'s subscriptions in {self.service}")
        self.bus.wrapper.clock = self.clock
        consumers = subscriptions.bind(handlers, batch_size=self.settings.consumer_batch)
        for consumer in consumers:
            if MemberLeft in consumer.types:
                scrub_after_erasures(consumer, self.scrubber)
        self.bus.consumers.extend(consumers)

    def unit_of_work(self) -> UnitOfWork:
        """A unit of work whose commit publishes through this service's outbox relay."""
        return UnitOfWork(self.relay)

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.heartbeat.beat(), name="heartbeat"))
        self.heartbeat.watch()
        self._tasks.append(asyncio.create_task(self._initialise(), name=f"{self.service}-init"))

    async def _initialise(self) -> None:
        # MongoDB may still be starting (or away): keep trying, /readyz says 503 meanwhile.
        await retry(self._prepare_storage, what=f"initialising {self.service} storage")
        # Nothing from here on waits for MongoDB or NATS: the bus connects in the background.
        await self.bus.start()
        await self.relay.start()
        for job in [*self.jobs, self._expire_loop, self.scrubber.run]:
            self._tasks.append(asyncio.create_task(job(), name=f"{self.service}-job"))
        self.initialised.set()

    async def _prepare_storage(self) -> None:
        """Every index and record start-up needs (all of it retried until MongoDB answers)."""
        await ensure_idempotency_indexes(self.db["idempotency_keys"])
        for hook in self.init_hooks:
            await hook()
        await self.bus.prepare()
        await self.relay.prepare()

    async def expire(self) -> None:
        """Delete processed-event records and Idempotency-Key records past their time.

        The TTL indexes do this on MongoDB. On nx-27017 these two collections carry a plain
        index instead (`shared.store.expiring_index`: its TTL purge runs on every read and
        grows with the collection), so without this both would grow with every event and
        request. Indexed ranges on epoch-ms fields: cheap on both.
        """
        now_ms = epoch_ms(utcnow())
        await self.db["processed_events"].delete_many(
            {"at_ms": {"$lt": now_ms - int(PROCESSED_TTL.total_seconds() * 1000)}}
        )
        await self.db["idempotency_keys"].delete_many(
            {"created_ms": {"$lt": now_ms - int(IDEMPOTENCY_TTL.total_seconds() * 1000)}}
        )

    async def _expire_loop(self) -> None:
        while True:
            try:
                await self.expire()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("expiring old records failed: %r", exc)
            await asyncio.sleep(EXPIRE_EVERY.total_seconds())

    async def stop(self) -> None:
        self.heartbeat.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        await self.keys.stop()
        if self.initialised.is_set():
            await self.relay.stop()
            await self.bus.stop()
        await self.mongo.close()

    async def readiness(self) -> dict[str, bool]:
        """What `/readyz` reports; `shared.probes.REQUIRED` names the checks that decide it."""
        return {
            "initialised": self.initialised.is_set(),
            # Answered within the probes' timeout (3 s) even while the driver waits longer.
            "mongodb": await ping(self.db, timeout=READY_PING_SECONDS),
            "api_keys": self.keys.synced.is_set(),
            "nats": self.bus.connected,
            "streams_and_consumers": self.bus.ready(),
        }


def scrub_after_erasures(consumer: Consumer, scrubber: Scrubber) -> None:
    """Kick the scrubber once the consumer has handled a member-left with erasure (the
    service's erasure of that member is written by then)."""
    handle, handle_batch = consumer.handle, consumer.handle_batch

    def erasing(events: list[EventData]) -> None:
        if any(isinstance(d, MemberLeft) and d.erase for d in events):
            scrubber.kick()

    async def one(envelope: CloudEvent, data: EventData) -> None:
        await handle(envelope, data)
        erasing([data])

    consumer.handle = one
    if handle_batch is not None:

        async def batch(events: list[tuple[CloudEvent, EventData]]) -> None:
            await handle_batch(events)
            erasing([d for _, d in events])

        consumer.handle_batch = batch


def create_app(
    runtime: Runtime,
    routers: list[APIRouter],
    *,
    title: str,
    description: str,
    larger_bodies: dict[str, int] | None = None,
    context: object = None,
) -> FastAPI:
    """FastAPI app with the common endpoints, auth, idempotency, errors and metrics.

    Request bodies are limited (`shared.http.MAX_BODY_BYTES`, 413 beyond); `larger_bodies`
    gives routes that take files their own limit, by path. `context` is the service's one
    object of what its routes use (its use cases, built by its composition root): kept as
    `app.state.context`, which the service's routes reach through one typed dependency
    (`Depends(<service>_of)` in its context.py) and nothing else on `app.state`."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        generate_unique_id_function=operation_id(runtime.service),
    )
    # The one error shape and every status each route answers (shared/http/openapi.py).
    install_openapi(app)
    app.state.runtime = runtime
    app.state.context = context
    install_error_handlers(app)
    scopes = RouteScopes(routers)
    if undeclared := scopes.undeclared_posts():
        # The kernel checks a POST's scope (require) before it replays an Idempotency-Key
        # answer; without one, another key's answer could be replayed to anyone.
        raise ValueError(f"POST routes without require(scope): {', '.join(undeclared)}")
    app.add_middleware(
        KernelMiddleware,
        metrics=runtime.metrics,
        keys=runtime.keys,
        idempotency=runtime.db["idempotency_keys"],
        scopes=scopes,
        limits=runtime.limits,
    )
    # A body over the limit is refused before anything reads it.
    app.add_middleware(BodyLimit, larger=larger_bodies or {})
    # One access log line for every request, a refused body included.
    app.add_middleware(AccessLog, routes=[route for route, _ in scopes.routes])
    app.add_middleware(tracing.TraceRequests, service=runtime.service)  # outermost: the span
    _operations(app, runtime)
    for router in routers:
        app.include_router(router)
    return app


def _operations(app: FastAPI, runtime: Runtime) -> None:
    """The routes every service serves without a key: the probes, metrics, AsyncAPI."""

    @app.get(
        "/healthz",
        tags=["operations"],
        response_model=Liveness,
        responses={503: {"model": Liveness, "description": "the event loop has not run for 5 s"}},
    )
    async def healthz() -> JSONResponse:
        """Liveness: 200 while the event loop runs, 503 when it has not for 5 s (a blocked
        loop answers nothing: probe with a timeout of 3 s)."""
        return runtime.heartbeat.answer()

    @app.get(
        "/readyz",
        tags=["operations"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "a required check does not hold"}},
    )
    async def readyz() -> JSONResponse:
        """Readiness: 200 once started, with MongoDB answering and the API keys read; NATS
        is reported and does not decide (writes wait in the outbox while it is away)."""
        return readiness_answer(await runtime.readiness())

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi", tags=["operations"])
    async def asyncapi() -> dict[str, Any]:
        # Generated once (about half a second), off the event loop so requests go on meanwhile.
        return await asyncio.to_thread(
            asyncapi_document, runtime.service, runtime.publishes, runtime.bus.consumers
        )


def serve(app: FastAPI, settings: ServiceSettings, service: str) -> None:
    """Run one service in the foreground (`python -m services.<name>`)."""
    configure_logging(service, settings.log_format, settings.log_level)
    host = os.environ.get("SARAFAN_HOST", settings.host)
    uvicorn.run(app, host=host, port=settings.port, log_config=None, access_log=False)
