"""Where spans go: the exporters the `OTEL_*` variables ask for, and a tracer per service."""

from __future__ import annotations

import atexit
import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

log = logging.getLogger("sarafan.tracing")

#: The only exporter protocol the image ships (opentelemetry-exporter-otlp-proto-http).
OTLP_PROTOCOL = "http/protobuf"
#: The environment variables tracing reads (here or in the OpenTelemetry SDK): a deployment
#: may set them beside a service's own settings (docs/operations.md, "Tracing").
VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
)


@dataclass
class _State:
    processors: list[SpanProcessor] = field(default_factory=list)
    #: Each service's tracer, made once (its provider, resource and instrumentation scope).
    tracers: dict[str, trace.Tracer] = field(default_factory=dict)
    environment_read: bool = False


state = _State()


def enabled() -> bool:
    return bool(state.processors)


def processors_from(environ: Mapping[str, str]) -> list[SpanProcessor]:
    """The span processors the `OTEL_*` variables ask for; none (tracing off) unless an
    exporter is named and, for OTLP, given an endpoint."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    found: list[SpanProcessor] = []
    if "console" in names:
        found.append(BatchSpanProcessor(ConsoleSpanExporter()))
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if "otlp" in names and endpoint:
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOL
        )
        if protocol.strip() != OTLP_PROTOCOL:
            log.error("OTEL protocol %r is not shipped (only %s): no OTLP", protocol, OTLP_PROTOCOL)
        else:
            # Imported here: its HTTP client is loaded only when traces are exported.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # The exporter and the processor read the rest of OTEL_EXPORTER_OTLP_* and OTEL_BSP_*.
            found.append(BatchSpanProcessor(OTLPSpanExporter()))
    return found


def configure(service: str) -> None:
    """Read the `OTEL_*` variables once per process (each service's runtime calls this)."""
    if state.environment_read:
        return
    state.environment_read = True
    if state.processors:  # installed by hand (tests) before any service started
        return
    found = processors_from(os.environ)
    if found:
        state.processors = found
        atexit.register(_shutdown, found)
        log.info("tracing on for %s (%d exporter(s))", service, len(found))


def install(processor: SpanProcessor | None) -> None:
    """Send every service's spans to `processor` from now on, whatever the environment says
    (tests; before the services are built); None turns tracing off."""
    state.processors = [processor] if processor is not None else []
    state.tracers.clear()
    state.environment_read = True


def _shutdown(processors: list[SpanProcessor]) -> None:
    for processor in processors:
        processor.shutdown()  # exports what is still queued


@functools.cache
def _version() -> str:
    try:
        return metadata.version("sarafan")
    except metadata.PackageNotFoundError:
        return "0"


def tracer(service: str) -> trace.Tracer:
    """The service's tracer: its own provider, so services sharing a process (tests) keep
    their own `service.name`; the sampler is the SDK's (`OTEL_TRACES_SAMPLER`)."""
    found = state.tracers.get(service)
    if found is None:
        name = os.environ.get("OTEL_SERVICE_NAME") or f"sarafan-{service}"
        resource = Resource.create({"service.name": name, "service.version": _version()})
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for processor in state.processors:
            provider.add_span_processor(processor)
        found = state.tracers[service] = provider.get_tracer("sarafan", _version())
    return found
