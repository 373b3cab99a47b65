"""Erasing a stream's messages by subject so that their bytes are gone from the store, not only
from its index.

A JetStream purge (`$JS.API.STREAM.PURGE.<stream>` with a subject filter) drops the messages
from the stream's index and leaves their bytes in the message blocks on disk until the block is
compacted or removed: an erased member's email stays readable in `msgs/1.blk`. Deleting a
message with `$JS.API.STREAM.MSG.DELETE.<stream>` and `no_erase: false` makes the server
overwrite the message's record with random bytes first (the request's documented default; the
field is sent anyway, so the intent does not hang on a client library's default).

The messages are found through the stream's per-subject index, so the cost grows with the
messages on the subject, not with the stream: the subject state (`STREAM.INFO` with a
`subjects_filter`) names the concrete subjects that match and how many messages each holds, and
`STREAM.MSG.GET` with `next_by_subj` on one concrete subject jumps straight to its next message.
"""

from __future__ import annotations

import json
from typing import Any

import nats.js.errors

#: The JetStream API prefix (the default domain: the stack declares no other).
API = "$JS.API"
#: Seconds to wait for one API answer.
TIMEOUT = 5.0


async def erase_messages(nc: Any, js: Any, stream: str, subject: str) -> int:
    """Securely delete every message of `stream` on `subject` (wildcards allowed); returns how
    many were erased. Nothing to do when the stream does not exist (yet)."""
    try:
        info = await js.stream_info(stream, subjects_filter=subject)
    except nats.js.errors.NotFoundError:
        return 0
    erased = 0
    for concrete in sorted(info.state.subjects or {}):
        erased += await _erase_subject(nc, js, stream, concrete)
    return erased


async def _erase_subject(nc: Any, js: Any, stream: str, subject: str) -> int:
    """Every message on one concrete subject, from the first: each lookup asks the index for
    the next message on the subject after the one just erased."""
    erased, after = 0, 0
    while True:
        try:
            msg = await js.get_msg(stream, seq=after, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return erased
        erased += await secure_delete(nc, stream, msg.seq)
        after = msg.seq + 1


async def secure_delete(nc: Any, stream: str, seq: int) -> int:
    """Delete message `seq` of `stream`, its bytes overwritten; 1 when it was there, 0 when it
    was already gone (another replica of the eraser got there first)."""
    request = json.dumps({"seq": seq, "no_erase": False}).encode()
    reply = await nc.request(f"{API}.STREAM.MSG.DELETE.{stream}", request, timeout=TIMEOUT)
    answer = json.loads(reply.data)
    error = answer.get("error")
    if error is None:
        return 1
    if error.get("code") == 404:
        return 0
    nats.js.errors.APIError.from_error(error)  # raises the matching nats-py error
    return 0
