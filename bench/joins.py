"""Joins: throughput at 50 clients, join → welcome latency below capacity, service memory.

Each Sarafan figure is measured beside a bare baseline (bench/bare_app.py) in the same run,
on the same nats-server and nx-27017.
Run: .venv/bin/python -m bench.joins [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
from pymongo import AsyncMongoClient

from bench.stack import (
    TOKEN,
    emit,
    machine,
    percentile,
    rss_mib,
    running_stack,
    write_section,
)
from sarafan.embedded import Child, free_port, http_ok
from sarafan.nats_auth import ADMIN_USER
from sarafan.supervisor import nats_passwords

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The join rate of the latency leg, unless the stack serves less (then 60 % of what it serves).
MAX_RATE = 100


def join_body() -> dict:
    return {
        "display_name": "Bench",
        "email": f"b.{uuid.uuid4().hex}@example.org",
        "region": "moscow",
        "consent": {"terms": True, "marketing": False},
    }


async def closed_loop(url: str, clients: int, seconds: float, headers: dict) -> float:
    """Requests/s of `clients` workers each sending the next request when the last returns."""
    done = 0
    errors = 0
    transport_errors: list[str] = []
    stop_at = time.perf_counter() + seconds
    async with httpx.AsyncClient(
        headers=headers, timeout=30, limits=httpx.Limits(max_connections=clients)
    ) as client:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop_at:
                try:
                    r = await client.post(url, json=join_body())
                except httpx.TransportError as exc:
                    # Counted and reported, not fatal: a dropped connection is a figure too.
                    transport_errors.append(type(exc).__name__)
                    continue
                if r.status_code == 201:
                    done += 1
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    if errors:
        print(f"  {errors} non-201 answers from {url}", file=sys.stderr)
    if transport_errors:
        print(
            f"  {len(transport_errors)} requests failed ({', '.join(sorted(set(transport_errors)))})"
            f" to {url}",
            file=sys.stderr,
        )
    return done / elapsed


async def open_loop(url: str, rate: float, seconds: float, headers: dict) -> dict[str, float]:
    """Send joins at a steady `rate`; returns member_id → wall-clock send time."""
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:

        async def one() -> None:
            t = time.time()
            r = await client.post(url, json=join_body())
            if r.status_code == 201:
                sent[r.json()["member_id"]] = t

        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return sent


async def arrival_times(
    mongo_url: str, db: str, coll: str, ids: list[str], query_extra: dict, timeout: float = 60
) -> dict[str, float]:
    client = AsyncMongoClient(mongo_url, tz_aware=True)
    found: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(found) < len(ids) and time.monotonic() < deadline:
            missing = [i for i in ids if i not in found]
            for start in range(0, len(missing), 500):
                chunk = missing[start : start + 500]
                async for doc in client[db][coll].find(
                    {"member_id": {"$in": chunk}, **query_extra}
                ):
                    at = doc.get("created_at")
                    if isinstance(at, datetime):
                        found[doc["member_id"]] = at.timestamp()
            if len(found) < len(ids):
                await asyncio.sleep(0.2)
    finally:
        await client.close()
    return found


def latencies(sent: dict[str, float], arrived: dict[str, float]) -> dict[str, float]:
    values = [(arrived[m] - t) * 1000 for m, t in sent.items() if m in arrived]
    return {
        "p50_ms": round(percentile(values, 50), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "delivered": len(values),
        "sent": len(sent),
    }


async def main_async(seconds: float) -> None:
    with running_stack() as stack:
        cfg = stack.config
        members = f"{cfg.service_url('members')}/v1/members"
        bare_port = free_port()
        logs = cfg.home / "logs"
        bare = Child(
            "bare",
            [
                sys.executable,
                "-m",
                "bench.bare_app",
                "--port",
                str(bare_port),
                "--nats",
                cfg.nats_url,
                "--mongo",
                cfg.mongodb_url("members"),
                # The stack's NATS has a user per service; the baseline connects as operator.
                "--nats-user",
                ADMIN_USER,
                f"--nats-password={nats_passwords(cfg.home)[ADMIN_USER]}",  # may start with -
            ],
            log_path=logs / "bare.log",
            cwd=Path(__file__).resolve().parent.parent,
            ready_check=lambda: http_ok(f"http://127.0.0.1:{bare_port}/healthz"),
        )
        bare.start()
        try:
            bare.wait_ready(30)
            bare_url = f"http://127.0.0.1:{bare_port}"
            idle = {name: rss_mib(stack.children[name].pid) for name in stack.services}

            sarafan_rps = await closed_loop(members, 50, seconds, AUTH)
            bare_rps = await closed_loop(f"{bare_url}/insert", 50, seconds, {})
            throughput = {
                "benchmark": "joins_per_second_50_clients",
                "sarafan": round(sarafan_rps, 1),
                "bare": round(bare_rps, 1),
                "ratio": round(sarafan_rps / bare_rps, 3),
            }
            emit(throughput)

            # Latency below capacity: at a rate the stack cannot serve, it measures only how long
            # the queue grew during the run. 100 joins/s, or 60 % of the closed loop's rate if
            # that is less; the baseline is sent at the same rate.
            rate = min(MAX_RATE, round(sarafan_rps * 0.6))
            sent = await open_loop(members, rate, seconds, AUTH)
            arrived = await arrival_times(
                cfg.mongodb_url("notifier"),
                "sarafan_notifier",
                "deliveries",
                list(sent),
                {"channel": "inapp"},
            )
            s_lat = latencies(sent, arrived)
            bare_sent = await open_loop(f"{bare_url}/join", rate, seconds, {})
            bare_arrived = await arrival_times(
                cfg.mongodb_url("members"), "bare", "welcomes", list(bare_sent), {}
            )
            b_lat = latencies(bare_sent, bare_arrived)
            latency = {
                "benchmark": "join_to_welcome_latency",
                "joins_per_second": rate,
                "sarafan": s_lat,
                "bare": b_lat,
                "ratio_p50": round(s_lat["p50_ms"] / b_lat["p50_ms"], 2),
                "ratio_p99": round(s_lat["p99_ms"] / b_lat["p99_ms"], 2),
            }
            emit(latency)
            loaded = {name: rss_mib(stack.children[name].pid) for name in stack.services}
            memory = {"benchmark": "service_rss_mib", "idle": idle, "after_load": loaded}
            emit(memory)
        finally:
            bare.stop()
    body = f"""Machine: {machine()}. Command: `.venv/bin/python -m bench.joins --seconds {seconds:g}`.
Sarafan runs as `sarafan up` starts it (five services, nats-server, one nx-27017 per service); the bare
baseline (`bench/bare_app.py`) runs on the same nats-server and nx-27017 in the same run.
The latency leg sends joins at 100/s, or at 60 % of the closed loop's rate when the stack
serves less: above its capacity it would measure only how long the queue grew in the run.

| figure | Sarafan | bare baseline | ratio |
|---|---|---|---|
| joins/s, 50 concurrent clients (bare: FastAPI + one insert) | {throughput["sarafan"]} | {throughput["bare"]} | {throughput["ratio"]} |
| join → welcome p50 at {rate} joins/s (bare: HTTP + insert + publish + consume + insert) | {s_lat["p50_ms"]} ms | {b_lat["p50_ms"]} ms | {latency["ratio_p50"]} |
| join → welcome p99 at {rate} joins/s | {s_lat["p99_ms"]} ms | {b_lat["p99_ms"]} ms | {latency["ratio_p99"]} |
| welcomes delivered / joins sent | {s_lat["delivered"]} / {s_lat["sent"]} | {b_lat["delivered"]} / {b_lat["sent"]} | |

Resident memory (MiB) of each service, idle → after the load above:
{", ".join(f"{n} {idle[n]} → {loaded[n]}" for n in idle)}.
"""
    write_section("Joins: throughput, join → welcome latency, memory", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main_async(args.seconds))


if __name__ == "__main__":
    main()
