"""The bare baseline service: one FastAPI endpoint, one insert, one publish, one consumer.

It does what a join does at its barest (HTTP → insert → JetStream publish with PubAck →
pull consumer → insert) with none of Sarafan's validation, outbox, dedup or metrics, so the
benchmarks can show what those cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import nats
import uvicorn
from fastapi import FastAPI
from nats.js.api import StorageType, StreamConfig
from pymongo import AsyncMongoClient


def build(
    nats_url: str, mongo_url: str, user: str | None = None, password: str | None = None
) -> FastAPI:
    state: dict = {}

    async def consume() -> None:
        js = state["js"]
        sub = await js.pull_subscribe("bare.joined.*", durable="bare-welcome", stream="BARE")
        welcomes = state["db"]["welcomes"]
        while True:
            try:
                msgs = await sub.fetch(100, timeout=1)
                now = datetime.now(UTC)
                await welcomes.insert_many(
                    [{"member_id": m.subject.rsplit(".", 1)[1], "created_at": now} for m in msgs],
                    ordered=False,
                )
                for m in msgs:
                    await m.ack()
            except nats.errors.TimeoutError:
                continue
            except Exception as exc:  # keep consuming; unacked messages come back
                print(f"bare consumer: {exc!r}", flush=True)
                await asyncio.sleep(0.1)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state["nc"] = await nats.connect(nats_url, user=user, password=password)
        state["js"] = state["nc"].jetstream()
        await state["js"].add_stream(
            StreamConfig(name="BARE", subjects=["bare.>"], storage=StorageType.FILE)
        )
        state["mongo"] = AsyncMongoClient(mongo_url)
        state["db"] = state["mongo"]["bare"]
        task = asyncio.create_task(consume())
        yield
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await state["nc"].close()
        await state["mongo"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/insert", status_code=201)
    async def insert(body: dict) -> dict:
        doc = {"_id": str(uuid.uuid4()), **body}
        await state["db"]["members"].insert_one(doc)
        return {"member_id": doc["_id"]}

    @app.post("/join", status_code=201)
    async def join(body: dict) -> dict:
        doc = {"_id": str(uuid.uuid4()), **body}
        await state["db"]["members"].insert_one(doc)
        await state["js"].publish(
            f"bare.joined.{doc['_id']}", b"{}", stream="BARE", headers={"Nats-Msg-Id": doc["_id"]}
        )
        return {"member_id": doc["_id"]}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--mongo", required=True)
    parser.add_argument("--nats-user")
    parser.add_argument("--nats-password")
    args = parser.parse_args()
    uvicorn.run(
        build(args.nats, args.mongo, args.nats_user, args.nats_password),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )
