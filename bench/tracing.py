"""What tracing costs on the join path: off (the default) against on, in the same run.

members and notifier run in-process as `build()` wires them (one Python process, one event
loop: the notifier's consumer work competes with the joins, as on one small host), on the
embedded nats-server and nx-27017 started for the run. Each round is a closed loop of
concurrent joins over HTTP (ASGI, no network) for a few seconds, then waits until every
welcome is in the inbox; rounds alternate the modes so drift in the machine's load hits all
of them alike, and the median round of each mode is reported. Modes: off; on with every span
dropped in-process (the cost of making spans and carrying the context); on with the OTLP/HTTP
exporter sending to a local sink (what a collector on the host costs). Before them, the cost of
each hook alone (microseconds, timeit).
Run: .venv/bin/python -m bench.tracing [--seconds 6] [--rounds 3] [--clients 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
import timeit
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.stack import embedded_servers, emit, machine, percentile, write_section
from sarafan.embedded import LOCALHOST, free_port
from shared import tracing
from shared.events import MemberJoined, new_event

TOKEN = "bench-token"


class Dropped(SpanExporter):
    """Takes every span and keeps none (it counts them)."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that reads each request and answers 200 (a collector's front)."""

    received = 0

    def do_POST(self) -> None:  # http.server calls it by this name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Sink.received += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


def join_body() -> dict[str, Any]:
    return {
        "display_name": "Bench",
        "email": f"b.{uuid.uuid4().hex}@example.org",
        "region": "moscow",
        "consent": {"terms": True, "marketing": False},
    }


def _off_hooks_of_a_join(event: Any) -> None:
    """Every tracing hook one join and its welcome pass while tracing is off (the server span
    aside): two events made, two published, one consumed, one in-app store."""
    for _ in range(2):
        tracing.creation_context(event.correlationid)
        with tracing.publishing("members", event):
            tracing.current_fields()
    with tracing.processing("notifier", "notifier-members", None, event) as span:
        span.outcome("ok")
    with tracing.sending("notifier", "inapp", [event]):
        pass


async def _asgi_pass_through_us(n: int) -> float:
    """Microseconds the server-span middleware adds to a request while tracing is off (the
    best of five timings with it, less the best of five without)."""

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        return None

    wrapped = tracing.TraceRequests(endpoint, "members")
    scope = {"type": "http", "path": "/v1/members", "method": "POST", "headers": []}
    best = []
    for app in (endpoint, wrapped):
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(n):
                await app(scope, None, None)
            timings.append(time.perf_counter() - started)
        best.append(min(timings))
    return max(best[1] - best[0], 0.0) / n * 1e6


def _us(call: Any, number: int) -> float:
    """Microseconds per call: the best of five runs (the least disturbed by other work)."""
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


async def hook_costs() -> dict[str, float]:
    """Microseconds per call of the hooks on the hot path, off and on (spans dropped)."""
    data = MemberJoined.model_validate(MemberJoined.example)
    n = 5000
    tracing.install(None)
    event = new_event(data)
    off_event = _us(lambda: new_event(data), n)
    off_hooks = _us(lambda: _off_hooks_of_a_join(event), n)
    off_asgi = await _asgi_pass_through_us(n)
    tracing.install(BatchSpanProcessor(Dropped()))
    span = trace.get_tracer("bench", tracer_provider=TracerProvider()).start_span("request")
    with trace.use_span(span):
        on_event = _us(lambda: new_event(data), n // 5)

    def publish() -> None:
        with tracing.publishing("members", event):
            tracing.current_fields()

    on_publish = _us(publish, n // 5)
    tracing.install(None)
    return {
        "new_event_off_us": round(off_event, 1),
        "new_event_on_us": round(on_event, 1),
        "hooks_of_a_join_off_us": round(off_hooks, 2),
        "asgi_off_us": round(off_asgi, 2),
        "publish_span_on_us": round(on_publish, 1),
    }


async def one_round(client: httpx.AsyncClient, notifier: Any, clients: int, seconds: float) -> dict:
    """Joins from `clients` workers for `seconds`, then the wait for every welcome."""
    latencies: list[float] = []
    members: list[str] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            r = await client.post("/v1/members", json=join_body())
            latencies.append((time.perf_counter() - started) * 1000)
            if r.status_code == 201:
                members.append(r.json()["member_id"])

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(clients)))
    joined = time.perf_counter() - started
    deliveries = notifier.store.deliveries
    while await deliveries.count_documents({"member_id": {"$in": members}}) < len(members):  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return {
        "joins_per_s": len(members) / joined,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "welcomed_per_s": len(members) / (time.perf_counter() - started),
        # This process's CPU (both services, and the exporter's thread) per join and welcome:
        # steadier than rates on a shared machine.
        "cpu_ms_per_join": (time.process_time() - cpu) * 1000 / max(len(members), 1),
        "joins": len(members),
    }


async def run_service(stack: AsyncExitStack, name: str, nats_url: str, mongo_url: str) -> Any:
    module = __import__(f"services.{name}.app", fromlist=["compose"])
    settings = getattr(module, f"{name.capitalize()}Settings")(
        NATS_URL=nats_url,
        MONGODB_URL=mongo_url,
        SARAFAN_MONGODB_DATABASE=f"bench_{uuid.uuid4().hex[:6]}_{name}",
        SARAFAN_API_TOKEN=TOKEN,
    )
    parts = module.compose(settings)
    app = parts.app
    await stack.enter_async_context(app.router.lifespan_context(app))
    while not app.state.runtime.bus.ready():  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return parts


def processor(mode: str, sink_port: int, dropped: Dropped) -> Any:
    if mode == "off":
        return None
    if mode == "on, spans dropped":
        return BatchSpanProcessor(dropped)
    endpoint = f"http://{LOCALHOST}:{sink_port}/v1/traces"
    return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))


def export_us(sink_port: int) -> float:
    """Microseconds the OTLP/HTTP exporter spends per span (encoding and posting a batch of
    512 publish spans to the local sink), the best of five."""
    kept = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(kept))
    event = new_event(MemberJoined.model_validate(MemberJoined.example))
    for _ in range(512):
        with tracing.publishing("members", event):
            pass
    tracing.install(None)
    spans = kept.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=f"http://{LOCALHOST}:{sink_port}/v1/traces")
    best = min(timeit.repeat(lambda: exporter.export(spans), number=1, repeat=5))
    exporter.shutdown()
    return best / len(spans) * 1e6


async def main_async(seconds: float, rounds: int, clients: int) -> None:
    load = os.getloadavg()[0]
    costs = await hook_costs()
    emit({"benchmark": "tracing_hooks", **costs})
    sink = ThreadingHTTPServer((LOCALHOST, free_port()), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    costs["otlp_export_per_span_us"] = round(export_us(sink.server_address[1]), 1)
    modes = ["off", "on, spans dropped", "on, OTLP to a local sink"]
    results: dict[str, list[dict]] = {m: [] for m in modes}
    with embedded_servers() as (nats_url, mongo_url):
        async with AsyncExitStack() as stack:
            members = (await run_service(stack, "members", nats_url, mongo_url)).app
            notifier = await run_service(stack, "notifier", nats_url, mongo_url)
            transport = httpx.ASGITransport(app=members)
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://members",
                                  headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            )  # fmt: skip
            await one_round(client, notifier, clients, 1.0)  # warm-up
            for n in range(rounds):
                for mode in modes[n % 3 :] + modes[: n % 3]:
                    dropped = Dropped()
                    active = processor(mode, sink.server_address[1], dropped)
                    tracing.install(active)
                    results[mode].append(await one_round(client, notifier, clients, seconds))
                    tracing.install(None)
                    if active is not None:
                        active.shutdown()  # exports what is queued before the next round
                    results[mode][-1]["spans_per_join"] = dropped.count / results[mode][-1]["joins"]
                    emit({"benchmark": "tracing_join_round", "mode": mode, **results[mode][-1]})
    sink.shutdown()
    report(costs, results, (seconds, rounds, clients), (load, os.getloadavg()[0]))


def report(
    costs: dict,
    results: dict[str, list[dict]],
    run: tuple[float, int, int],
    load: tuple[float, float],
) -> None:
    seconds, rounds, clients = run

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    base, base_cpu = median("off", "joins_per_s"), median("off", "cpu_ms_per_join")
    per_join = median("on, spans dropped", "spans_per_join")
    estimate = per_join * (costs["publish_span_on_us"] + costs["otlp_export_per_span_us"]) / 1000
    rows = "\n".join(
        f"| {mode} | {median(mode, 'cpu_ms_per_join'):.2f} ms"
        f" ({median(mode, 'cpu_ms_per_join') / base_cpu:.3f})"
        f" | {median(mode, 'joins_per_s'):.1f} ({median(mode, 'joins_per_s') / base:.3f})"
        f" | {median(mode, 'p50_ms'):.1f} ms | {median(mode, 'p99_ms'):.1f} ms"
        f" | {median(mode, 'welcomed_per_s'):.1f} |"
        for mode in results
    )
    body = f"""Machine: {machine()}. Command: `.venv/bin/python -m bench.tracing --seconds {seconds:g} --rounds {rounds} --clients {clients}`.
members and notifier in one process on the embedded nats-server and nx-27017; {clients} clients
join over ASGI for {seconds:g} s per round, then the round waits for every welcome; {rounds}
rounds per mode, alternated, medians shown (ratio to off in brackets). CPU is this process's
(both services and the exporter's thread) from the first join to the last welcome: steadier
than the rates when other work shares the machine. Load average {load[0]:.1f} at the start,
{load[1]:.1f} at the end (2 cores: other work was running beside it when either is near 2 or over).

| tracing | CPU per join and welcome | joins/s | join p50 | join p99 | joins welcomed/s |
|---|---|---|---|---|---|
{rows}

Each hook alone (the best of five timings): while off, every hook a join and its welcome pass (two events made and
published, one consumed, one in-app store) takes {costs["hooks_of_a_join_off_us"]} µs in all, and
the server-span middleware adds {costs["asgi_off_us"]} µs to a request; `new_event` takes
{costs["new_event_off_us"]} µs off and {costs["new_event_on_us"]} µs on (inside a span); one publish
span with its header {costs["publish_span_on_us"]} µs (spans dropped); the OTLP/HTTP exporter
{costs["otlp_export_per_span_us"]} µs per span (encoding and posting a batch of 512). A join and
its welcome make {per_join:.1f} spans, so tracing on should cost about
{per_join:.1f} × ({costs["publish_span_on_us"]} + {costs["otlp_export_per_span_us"]}) µs =
{estimate:.2f} ms of CPU per join, {estimate / base_cpu * 100:.0f} % of the {base_cpu:.2f} ms above.
"""
    write_section("Tracing: the join path off and on", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main_async(args.seconds, args.rounds, args.clients))


if __name__ == "__main__":
    main()
