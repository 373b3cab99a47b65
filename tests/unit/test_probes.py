"""What the probes answer, from the state they read (no server)."""

from __future__ import annotations

import json
import time

from shared.probes import REQUIRED, Heartbeat, readiness_answer

ALL_TRUE = {
    "initialised": True,
    "mongodb": True,
    "api_keys": True,
    "nats": True,
    "streams_and_consumers": True,
}


def test_liveness_is_503_once_the_heartbeat_is_older_than_its_limit() -> None:
    heartbeat = Heartbeat("members", stale_after=5)
    assert heartbeat.answer().status_code == 200
    heartbeat.stamp = time.monotonic() - 6  # the loop has not run the heartbeat for 6 s
    answer = heartbeat.answer()
    assert answer.status_code == 503
    assert json.loads(answer.body)["status"] == "stalled"


def test_readiness_is_decided_by_start_up_mongodb_and_the_keys_never_by_nats() -> None:
    assert set(REQUIRED) == {"initialised", "mongodb", "api_keys"}
    nats_away = {**ALL_TRUE, "nats": False, "streams_and_consumers": False}
    answer = readiness_answer(nats_away)
    assert answer.status_code == 200
    assert json.loads(answer.body)["checks"]["nats"] is False  # reported all the same
    for required in REQUIRED:
        assert readiness_answer({**ALL_TRUE, required: False}).status_code == 503, required
