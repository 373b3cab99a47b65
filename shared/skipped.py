"""Stored documents a service cannot use: skipped, logged by id, counted.

A document written by hand, by an older version or half-migrated must not take a list, a job
or a fan-out down with it: the code that meets it leaves it out, says so in the log (its id
and what is wrong, never its values: they may be personal data) and counts it in
`sarafan_documents_skipped_total{service, collection}`. Every service has one
(`Runtime.skipped`).
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

log = logging.getLogger("sarafan.skipped")

#: How many (collection, id) pairs are remembered as already logged: a document that stays
#: broken is logged once with its traceback, then only counted (a job meets it every few
#: seconds). Bounded, so that memory never grows with the number of broken documents.
REMEMBERED = 1000


class SkippedDocuments:
    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service
        self.registry = registry
        self.counter = Counter(
            "sarafan_documents_skipped_total",
            "Stored documents left out because they could not be read or acted on",
            ["service", "collection"],
            registry=registry,
        )
        self._logged: set[tuple[str, str]] = set()

    def skip(self, collection: str, doc_id: Any, exc: BaseException, doing: str) -> None:
        """Count a document left out of `doing` (a list, a start, the scoring) and log it."""
        self.counter.labels(self.service, collection).inc()
        key = (collection, str(doc_id)[:100])
        if key in self._logged:
            log.debug("%s: %s %s skipped again (%s)", doing, collection, key[1], what_is_wrong(exc))
            return
        if len(self._logged) >= REMEMBERED:
            self._logged.clear()
        self._logged.add(key)
        log.error(
            "%s: skipped unusable %s document %s (%s)",
            doing,
            collection,
            key[1],
            what_is_wrong(exc),
            # A validation error's text quotes the stored values; other tracebacks say where.
            exc_info=not isinstance(exc, ValidationError),
        )

    def count(self, collection: str) -> float:
        """How many were skipped so far (for operators and tests)."""
        labels = {"service": self.service, "collection": collection}
        return self.registry.get_sample_value("sarafan_documents_skipped_total", labels) or 0.0


def what_is_wrong(exc: BaseException) -> str:
    """The fields and kinds of error, never the values."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['type']}" for e in exc.errors()[:10]
        )
    if isinstance(exc, KeyError):
        return f"missing field {str(exc)[:100]}"
    return type(exc).__name__
