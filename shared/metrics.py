"""Prometheus metrics (docs/contract.md), one registry per service, each labelled `service`."""

from __future__ import annotations

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

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """All metric families of one service (a registry of its own keeps tests independent)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_published = Counter(
            "sarafan_events_published_total",
            "Events published to JetStream (PubAck received)",
            ["service", "type"],
            registry=r,
        )
        self.events_consumed = Counter(
            "sarafan_events_consumed_total",
            "Events consumed, by outcome (ok, duplicate, retry, dead)",
            ["service", "type", "outcome"],
            registry=r,
        )
        self.handler_seconds = Histogram(
            "sarafan_handler_seconds",
            "Time spent handling one event",
            ["service", "type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox_pending = Gauge(
            "sarafan_outbox_pending",
            "Outgoing events written but not yet acknowledged by JetStream",
            ["service"],
            registry=r,
        )
        self.outbox_dead = Counter(
            "sarafan_outbox_dead_total",
            "Outgoing events set aside after failing to publish for good (outbox_dead)",
            ["service"],
            registry=r,
        )
        self.consumer_pending = Gauge(
            "sarafan_consumer_pending",
            "JetStream num_pending of each durable consumer",
            ["service", "consumer"],
            registry=r,
        )
        self.dlq_messages = Counter(
            "sarafan_dlq_messages_total",
            "Messages copied to the dead-letter stream",
            ["service", "consumer"],
            registry=r,
        )
        self.http_requests = Counter(
            "sarafan_http_requests_total",
            "HTTP requests by route and status",
            ["service", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "sarafan_http_request_seconds",
            "HTTP request duration by route",
            ["service", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.notifications = Counter(
            "sarafan_notifications_total",
            "Notification deliveries by channel and outcome",
            ["service", "channel", "outcome"],
            registry=r,
        )

    def gauge(self, name: str, doc: str) -> Gauge:
        """A service-specific gauge (e.g. the community figures), labelled `service`."""
        return Gauge(name, doc, ["service"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
