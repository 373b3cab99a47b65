"""Prometheus metrics (docs/contract.md), one registry per service, each labelled `service`."""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# `_created` series double every counter's cardinality and no dashboard reads them.
disable_created_metrics()

M = TypeVar("M", Counter, Gauge, Histogram)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """All metric families of one service (a registry of its own keeps tests independent)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        # In this order on /metrics.
        self._events()
        self._outbox()
        self._consumers()
        self._http()
        self.notifications = self._family(
            Counter,
            "sarafan_notifications_total",
            "Notification deliveries by channel and outcome",
            "channel",
            "outcome",
        )

    def _events(self) -> None:
        """Events published and consumed."""
        self.events_published = self._family(
            Counter,
            "sarafan_events_published_total",
            "Events published to JetStream (PubAck received)",
            "type",
        )
        self.events_consumed = self._family(
            Counter,
            "sarafan_events_consumed_total",
            "Events consumed, by outcome (ok, duplicate, retry, dead)",
            "type",
            "outcome",
        )
        self.handler_seconds = self._family(
            Histogram,
            "sarafan_handler_seconds",
            "Time spent handling one event",
            "type",
            buckets=LATENCY_BUCKETS,
        )

    def _consumers(self) -> None:
        """The durable consumers' backlog and dead letters."""
        self.consumer_pending = self._family(
            Gauge,
            "sarafan_consumer_pending",
            "JetStream num_pending of each durable consumer",
            "consumer",
        )
        self.dlq_messages = self._family(
            Counter,
            "sarafan_dlq_messages_total",
            "Messages copied to the dead-letter stream",
            "consumer",
        )

    def _outbox(self) -> None:
        self.outbox_pending = self._family(
            Gauge,
            "sarafan_outbox_pending",
            "Outgoing events written but not yet acknowledged by JetStream",
        )
        self.outbox_dead = self._family(
            Counter,
            "sarafan_outbox_dead_total",
            "Outgoing events set aside after failing to publish for good (outbox_dead)",
        )

    def _http(self) -> None:
        self.http_requests = self._family(
            Counter,
            "sarafan_http_requests_total",
            "HTTP requests by route and status",
            "route",
            "status",
        )
        self.http_seconds = self._family(
            Histogram,
            "sarafan_http_request_seconds",
            "HTTP request duration by route",
            "route",
            buckets=LATENCY_BUCKETS,
        )

    def _family(self, kind: type[M], name: str, doc: str, *labels: str, **options: Any) -> M:
        """A metric family in this registry, labelled `service` first."""
        return kind(name, doc, ["service", *labels], registry=self.registry, **options)

    def gauge(self, name: str, doc: str) -> Gauge:
        """A service-specific gauge (e.g. the community figures), labelled `service`."""
        return Gauge(name, doc, ["service"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
