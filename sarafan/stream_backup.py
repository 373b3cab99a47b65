"""JetStream streams backed up and restored through the JetStream API, as `nats stream backup`
and `nats stream restore` do, in the same layout: a directory per stream with `backup.json`
(the stream's configuration and state) and `stream.tar.s2` (the server's snapshot: messages and
its consumers with their positions). Either tool restores what the other wrote.

Snapshot: `$JS.API.STREAM.SNAPSHOT.<stream>` names a subject the server sends the snapshot to in
chunks; each chunk carrying a reply subject is acknowledged (the server's flow control); an
empty message ends it (a `Status` header other than 204 is an error). Restore:
`$JS.API.STREAM.RESTORE.<stream>` answers a subject to send the chunks to, each one a request;
an empty request ends it and is answered with the restored stream. The server refuses to
restore over an existing stream.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from sarafan.ops import OpsError

META = "backup.json"
DATA = "stream.tar.s2"
#: How much of the snapshot file goes in one restore request.
RESTORE_CHUNK = 64 * 1024
API_TIMEOUT = 10.0
#: A chunk of a snapshot not arriving for this long aborts it.
SNAPSHOT_IDLE_SECONDS = 30.0


async def _api(nc: NatsClient, subject: str, request: dict[str, Any] | None = None) -> dict:
    payload = json.dumps(request).encode() if request is not None else b""
    try:
        reply = await nc.request(subject, payload, timeout=API_TIMEOUT)
    except Exception as exc:
        raise OpsError(f"JetStream API {subject}: {exc!r}") from exc
    answer = json.loads(reply.data or b"{}")
    if "error" in answer:
        raise OpsError(f"JetStream API {subject}: {answer['error'].get('description')}")
    return answer


async def stream_names(nc: NatsClient) -> list[str]:
    """Every stream of the account (the services', the DLQ, the API keys' bucket)."""
    names: list[str] = []
    while True:
        page = await _api(nc, "$JS.API.STREAM.NAMES", {"offset": len(names)})
        names += page.get("streams") or []
        if not page.get("streams") or len(names) >= page.get("total", 0):
            return sorted(names)


async def snapshot(nc: NatsClient, stream: str, directory: Path) -> int:
    """Write `stream`'s snapshot (with its consumers) to `directory`; its size in bytes.
    (A one-shot command: its file writes may block the loop, nothing else runs on it.)"""
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    inbox = nc.new_inbox()
    chunks: asyncio.Queue[Msg] = asyncio.Queue()

    async def deliver(msg: Msg) -> None:
        await chunks.put(msg)

    subscription = await nc.subscribe(inbox, cb=deliver)
    size = 0
    try:
        answer = await _api(
            nc,
            f"$JS.API.STREAM.SNAPSHOT.{stream}",
            {"deliver_subject": inbox, "no_consumers": False, "jsck": False},
        )
        with open(directory / DATA, "wb") as data:  # noqa: ASYNC230
            while True:
                try:
                    msg = await asyncio.wait_for(chunks.get(), SNAPSHOT_IDLE_SECONDS)
                except TimeoutError:
                    raise OpsError(f"snapshot of {stream}: no data for 30 s") from None
                if not msg.data:
                    status = (msg.headers or {}).get("Status", "")
                    if status and "204" not in status:
                        description = (msg.headers or {}).get("Description", "")
                        raise OpsError(f"snapshot of {stream}: {status} {description}")
                    break
                data.write(msg.data)
                size += len(msg.data)
                if msg.reply:
                    await nc.publish(msg.reply, b"")
    finally:
        await subscription.unsubscribe()
    meta = {"config": answer["config"], "state": answer["state"]}
    (directory / META).write_text(json.dumps(meta, indent=2) + "\n")
    return size


async def restore(nc: NatsClient, directory: Path, replace: bool = False) -> dict[str, Any]:
    """Restore the stream saved in `directory` (its messages and consumers); with `replace`,
    an existing stream of that name is deleted first. Returns the restored stream's state."""
    meta = json.loads((directory / META).read_text())
    name = meta["config"]["name"]
    if name in await stream_names(nc):
        if not replace:
            raise OpsError(f"stream {name} exists: restore into an empty NATS, or --force")
        await _api(nc, f"$JS.API.STREAM.DELETE.{name}")
    answer = await _api(nc, f"$JS.API.STREAM.RESTORE.{name}", meta)
    target = answer["deliver_subject"]
    with open(directory / DATA, "rb") as data:  # noqa: ASYNC230
        while chunk := data.read(RESTORE_CHUNK):
            reply = await nc.request(target, chunk, timeout=API_TIMEOUT)
            if reply.data and b'"error"' in reply.data:
                raise OpsError(f"restore of {name}: {reply.data.decode(errors='replace')}")
    done = await nc.request(target, b"", timeout=600)
    result = json.loads(done.data)
    if "error" in result:
        raise OpsError(f"restore of {name}: {result['error'].get('description')}")
    return result.get("state", {})
