"""Per-key rate limits on the /v1 writes: a token bucket per API key in each service process.

Every POST, PUT, PATCH and DELETE on /v1 made with a key takes one token from that key's
bucket (a bulk import is one request, so one token). A bucket holds a minute's worth of the
key's rate (`rate_per_minute` on the key, else `SARAFAN_KEY_RATE_PER_MINUTE`) and refills
continuously; an empty one answers 429 with `Retry-After`, before the request is claimed under
its Idempotency-Key, so nothing is kept and the retry runs. The buckets live in memory: the
limit holds per service replica (two replicas of a service let a key through twice as fast),
and a restart refills them. The bootstrap key (SARAFAN_API_TOKEN) is the operator's: never
limited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.responses import JSONResponse

from shared.http.errors import error_body
from shared.keys import Principal
from shared.settings import DEFAULT_KEY_RATE_PER_MINUTE as DEFAULT_RATE_PER_MINUTE

#: The methods that count as writes.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class _Bucket:
    rate: int
    tokens: float
    at: float


class WriteLimits:
    """The buckets of the keys this process has seen."""

    def __init__(
        self,
        default_per_minute: int = DEFAULT_RATE_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if default_per_minute < 1:
            raise ValueError("the default rate must be at least 1 a minute")
        self.default = default_per_minute
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def rate_of(self, principal: Principal) -> int:
        return principal.rate_per_minute or self.default

    def take(self, principal: Principal) -> float | None:
        """Take a token for one write: None when it may go, else the seconds until it may."""
        if principal.is_bootstrap:
            return None
        rate, now = self.rate_of(principal), self.clock()
        bucket = self._buckets.get(principal.key_id)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[principal.key_id] = _Bucket(rate, float(rate), now)
        else:
            bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.at) * rate / 60)
            bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) * 60 / rate

    def refusal(self, principal: Principal, wait: float) -> JSONResponse:
        """429 in the one error shape, with Retry-After in whole seconds (at least 1)."""
        seconds = max(1, math.ceil(wait))
        rate = self.rate_of(principal)
        return JSONResponse(
            error_body(
                "rate_limited",
                f"this API key may make {rate} writes a minute to this service; "
                f"retry in {seconds} s",
                {"rate_per_minute": rate, "retry_after_seconds": seconds},
            ),
            status_code=429,
            headers={"Retry-After": str(seconds)},
        )
