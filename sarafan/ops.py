"""The operator CLI's work: follow events, community stats (dead letters: sarafan/dlq.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import httpx
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from shared.settings import OpsConfig  # in the kernel: the services' commands read it too
from shared.topology import DLQ_STREAM, STREAMS

#: The subjects `sarafan events tail` follows by default: every service's events.
EVENT_SUBJECTS = tuple(f"{service}.>" for service in STREAMS)


class OpsError(RuntimeError):
    """Something the operator must fix (unreachable server, unknown DLQ id); printed as is."""


async def connect(config: OpsConfig) -> NatsClient:
    try:
        return await nats.connect(
            config.nats_url,
            user=config.nats_user,
            password=config.nats_password,
            name="sarafan-cli",
            connect_timeout=3,
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )
    except Exception as exc:
        raise OpsError(f"cannot connect to NATS at {config.nats_url}: {exc}") from exc


# -- events tail ------------------------------------------------------------------------------


def format_event(subject: str, payload: bytes) -> str:
    """One readable line: time, type, subject, then the data (shortened)."""
    try:
        event = json.loads(payload)
        data = json.dumps(event.get("data"), ensure_ascii=False, separators=(",", ":"))
        stamp = str(event.get("time", ""))[11:19] or "--:--:--"
        kind = event.get("type", "?")
    except (ValueError, AttributeError):
        stamp, kind, data = "--:--:--", "(not an event)", payload[:200].decode("utf-8", "replace")
    if len(data) > 160:
        data = data[:157] + "..."
    return f"{stamp}  {kind:<20} {subject}  {data}"


async def tail(
    config: OpsConfig,
    subjects: Sequence[str],
    out: TextIO,
    err: TextIO,
    count: int | None = None,
    raw: bool = False,
) -> int:
    """Print events as they are published, until interrupted or `count` were printed."""
    nc = await connect(config)
    seen = 0
    done = asyncio.Event()

    async def show(msg: Any) -> None:
        nonlocal seen
        if count is not None and seen >= count:
            return
        seen += 1
        line = msg.data.decode("utf-8", "replace") if raw else format_event(msg.subject, msg.data)
        print(line, file=out, flush=True)
        if count is not None and seen >= count:
            done.set()

    try:
        for subject in subjects or EVENT_SUBJECTS:
            await nc.subscribe(subject, cb=show)
        await nc.flush()
        print(f"following {', '.join(subjects or EVENT_SUBJECTS)} (Ctrl-C stops)", file=err)
        err.flush()
        await done.wait()
    finally:
        await nc.close()
    return 0


# -- stats ------------------------------------------------------------------------------------


async def consumer_rows(nc: NatsClient) -> list[tuple[str, str, int, int, int]]:
    """(stream, consumer, pending, waiting for ack, redelivered) of every durable consumer."""
    js = nc.jetstream(timeout=5)
    rows = []
    for stream in STREAMS.values():
        try:
            infos = await js.consumers_info(stream)
        except nats.js.errors.NotFoundError:
            continue
        for c in infos:
            rows.append(
                (stream, c.name, c.num_pending or 0, c.num_ack_pending or 0, c.num_redelivered or 0)
            )
    return sorted(rows)


async def _figures(config: OpsConfig, service: str, base_url: str, path: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {config.api_token}"}
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            response = await client.get(path, headers=headers)
    except httpx.HTTPError as exc:
        raise OpsError(f"{service} at {base_url} not reachable: {exc}") from exc
    if response.status_code != 200:
        raise OpsError(f"{service} {path}: HTTP {response.status_code} {response.text[:200]}")
    return dict(response.json())


async def community_figures(config: OpsConfig) -> dict[str, Any]:
    return await _figures(config, "engagement", config.engagement_url, "/v1/stats")


async def volunteering_figures(config: OpsConfig) -> dict[str, Any]:
    return await _figures(config, "activities", config.activities_url, "/v1/activities/stats")


def _figures_table(figures: dict[str, Any]) -> str:
    rows = [("FIGURE", "VALUE")]
    rows += [
        (name, _figure(value)) for name, value in figures.items() if not isinstance(value, dict)
    ]
    return table(rows)


async def stats(config: OpsConfig) -> str:
    figures = await community_figures(config)
    try:
        volunteering = _figures_table(await volunteering_figures(config))
    except OpsError as exc:
        # The community's figures are still worth printing without the activities service.
        volunteering = f"unavailable: {exc}"
    nc = await connect(config)
    try:
        consumers = await consumer_rows(nc)
        js = nc.jetstream(timeout=5)
        try:
            dead = (await js.stream_info(DLQ_STREAM)).state.messages
        except nats.js.errors.NotFoundError:
            dead = 0
    finally:
        await nc.close()
    parts = ["Community (engagement /v1/stats)", _figures_table(figures), ""]
    parts += ["Volunteering (activities /v1/activities/stats)", volunteering, ""]
    pending = [("STREAM", "CONSUMER", "PENDING", "ACK PENDING", "REDELIVERED")]
    pending += [(s, c, str(p), str(a), str(r)) for s, c, p, a, r in consumers]
    parts += ["Consumers", table(pending), "", f"Dead letters: {dead}"]
    return "\n".join(parts)


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3f}"
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value).isoformat(timespec="seconds")
    return str(value)


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
