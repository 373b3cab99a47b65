"""Tracing across the event flow (OpenTelemetry): one trace from a request to its last effect.

Spans: one per HTTP request (server, `asgi.TraceRequests`), per event published from the outbox
(producer, `publishing`), per consumed message (consumer, `processing`, `processing_batch`) and
per channel send in the notifier (client, `sending`). An event keeps the W3C trace context of
the moment it was created in its envelope (the CloudEvents distributed-tracing extension
`traceparent`, and `tracestate` when there is one: `creation_context`), so it rides in the
outbox document and in the published message, and a publish long after (a sweep after a
crash) is still in the request's trace. The NATS headers `traceparent`/`tracestate` carry the
publish span (the hop); a consumer continues the header's context, else the envelope's, else
starts a new trace (an outside producer). Attributes follow OpenTelemetry's semantic
conventions for HTTP, messaging (`messaging.system=nats`) and CloudEvents.

Configured by the standard `OTEL_*` variables (`provider.processors_from`); off unless an
exporter is set up (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
`OTEL_TRACES_EXPORTER=console`). Off, every hook is a check of one flag: no span, no header,
no envelope attribute. No span carries a contact address, a message text or a secret; error
texts are redacted as log lines are.
"""

from shared.tracing.asgi import UNTRACED_PATHS, TraceRequests
from shared.tracing.provider import VARIABLES, configure, enabled, install, processors_from
from shared.tracing.spans import (
    FIELDS,
    Spans,
    context_from,
    context_of,
    continued,
    creation_context,
    current_fields,
    fields_of,
    processing,
    processing_batch,
    publishing,
    sending,
)

__all__ = [
    "FIELDS",
    "UNTRACED_PATHS",
    "VARIABLES",
    "Spans",
    "TraceRequests",
    "configure",
    "context_from",
    "context_of",
    "continued",
    "creation_context",
    "current_fields",
    "enabled",
    "fields_of",
    "install",
    "processing",
    "processing_batch",
    "processors_from",
    "publishing",
    "sending",
]
