"""An outside service that follows Sarafan's events: a CRM sync in miniature.

It connects as the `integration` NATS user, keeps a durable pull consumer named
`integration-example` on the MEMBERS stream (member-joined) and on the CAMPAIGNS stream
(campaign-ended), validates every message against the published JSON Schemas, prints one line
per event and acks it (an invalid one is terminated: never redelivered). It stops after
--count events or --timeout seconds. Being durable, a restart goes on where it stopped.

    pip install nats-py jsonschema   # both come with `pip install -e '.[test]'`
    sarafan schemas schemas/
    export NATS_PASSWORD=...         # `sarafan up`: "integration" in .sarafan/nats-users.json
    python examples/crm_sync.py --schemas schemas/ --count 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import nats
import nats.errors
from jsonschema import Draft202012Validator

# Stream → the subjects this integration follows there (one durable consumer per stream).
FOLLOW = {"MEMBERS": "members.member-joined.>", "CAMPAIGNS": "campaigns.campaign-ended.>"}


def problems(raw: bytes, schemas: dict[str, Draft202012Validator]) -> tuple[dict, list[str]]:
    try:
        event = json.loads(raw)
    except ValueError as exc:
        return {}, [f"not JSON: {exc}"]
    schema = schemas.get(event.get("type")) if isinstance(event, dict) else None
    if schema is None:
        return {}, ["not a member-joined or campaign-ended CloudEvent"]
    return event, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in schema.iter_errors(event)]


def describe(event: dict) -> str:
    data = event["data"]
    if event["type"] == "member-joined":
        return f"member-joined {data['member_id']} {data['display_name']!r} in {data['region']}"
    winners = ",".join(w["member_id"] for w in data.get("winners", [])) or "-"
    return f"campaign-ended {data['campaign_id']} {data['participants']} took part, won: {winners}"


async def run(args: argparse.Namespace) -> int:
    types = ("member-joined", "campaign-ended")
    schemas = {
        t: Draft202012Validator(json.loads((args.schemas / f"{t}.json").read_text())) for t in types
    }
    # The password from the environment, not the command line (process lists show that).
    # Replies (pulled messages, API answers) come to the user's own inbox prefix only.
    password = os.environ.get("NATS_PASSWORD", "")
    nc = await nats.connect(
        args.url, user=args.user, password=password, inbox_prefix=f"_INBOX_{args.user}"
    )
    js = nc.jetstream()
    # The stream is named: looking it up by subject is an API call this user may not make.
    subs = [
        await js.pull_subscribe(subject, durable=args.durable, stream=stream)
        for stream, subject in FOLLOW.items()
    ]
    seen, loop = 0, asyncio.get_running_loop()
    deadline = loop.time() + args.timeout
    while seen < args.count and loop.time() < deadline:
        for sub in subs:
            try:
                msgs = await sub.fetch(args.count - seen, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                event, errors = problems(msg.data, schemas)
                if errors:
                    print(f"invalid {msg.subject}: {'; '.join(errors)}", flush=True)
                    await msg.term()
                else:
                    print(describe(event), flush=True)
                    await msg.ack()
                seen += 1
    await nc.drain()
    print(f"crm-sync: {seen} events", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--user", default="integration")
    parser.add_argument("--durable", default="integration-example")
    parser.add_argument("--schemas", type=Path, required=True, help="`sarafan schemas DIR`")
    parser.add_argument("--count", type=int, default=10, help="stop after this many events")
    parser.add_argument("--timeout", type=float, default=60.0, help="or after these seconds")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
