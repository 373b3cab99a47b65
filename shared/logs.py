"""Structured logging: JSON lines in containers, readable text locally, event ids on every line."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)
correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)
#: The API key whose request is being handled: its events name it (`keyid`) for the audit.
key_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("key_id", default=None)


@contextmanager
def event_context(event_id: str | None, correlation_id: str | None) -> Iterator[None]:
    """Every log line inside names the event and its correlation id."""
    t1 = event_id_var.set(event_id)
    t2 = correlation_id_var.set(correlation_id)
    try:
        yield
    finally:
        event_id_var.reset(t1)
        correlation_id_var.reset(t2)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.event_id = getattr(record, "event_id", None) or event_id_var.get()
        record.correlation_id = getattr(record, "correlation_id", None) or correlation_id_var.get()
        return True


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "service"}

#: What must never reach a log line, whoever logs it (a library's error message included):
#: contact addresses and secrets. Telegram's Bot API puts the token in the URL path.
_SECRETS = [
    (re.compile(r"bot\d{3,}:[A-Za-z0-9_-]{20,}"), "bot<token>"),
    (re.compile(r"(?i)(bearer|token|password|secret)([=: ]+)[^\s,;'\"&]+"), r"\1\2<redacted>"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "<email>"),
    (re.compile(r"\+\d{8,15}\b"), "<phone>"),
    (re.compile(r"(?<![\w/])@[A-Za-z][A-Za-z0-9_]{4,31}\b"), "@<telegram>"),
]


def redact(text: str) -> str:
    """The text without contact addresses and secrets (see _SECRETS)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": getattr(record, "service", None),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and v is not None
        )
        base = (
            f"{datetime.fromtimestamp(record.created).strftime('%H:%M:%S.%f')[:-3]} "
            f"{record.levelname:<7} {getattr(record, 'service', '-')}: {record.getMessage()}"
        )
        text = f"{base}  [{extra}]" if extra else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def configure_logging(service: str, fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request's URL at INFO (a Telegram bot token is in it); nats and the
    # access log are noise. Warnings still come through, redacted like every line.
    for noisy in ("uvicorn.access", "nats", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
