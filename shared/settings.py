"""Settings every service reads from the environment (pydantic-settings)."""

from __future__ import annotations

import os
from typing import TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORTS = {"members": 8001, "engagement": 8002, "campaigns": 8003, "notifier": 8004}


class ServiceSettings(BaseSettings):
    """What a service needs to run; each service subclasses it with its own knobs."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    nats_url: str = Field("nats://127.0.0.1:4222", alias="NATS_URL")
    nats_user: str | None = Field(None, alias="NATS_USER")
    nats_password: str | None = Field(None, alias="NATS_PASSWORD")
    mongodb_url: str = Field("mongodb://127.0.0.1:27017", alias="MONGODB_URL")
    mongodb_database: str | None = Field(None, alias="SARAFAN_MONGODB_DATABASE")
    api_token: str = Field("", alias="SARAFAN_API_TOKEN")
    host: str = Field("127.0.0.1", alias="SARAFAN_HOST")
    log_format: str = Field("text", alias="SARAFAN_LOG_FORMAT")
    log_level: str = Field("INFO", alias="SARAFAN_LOG_LEVEL")
    stream_replicas: int = Field(1, alias="SARAFAN_STREAM_REPLICAS", ge=1, le=5)
    outbox_sweep_seconds: float = Field(5.0, alias="SARAFAN_OUTBOX_SWEEP_SECONDS", gt=0)
    max_deliver: int = Field(5, alias="SARAFAN_MAX_DELIVER", ge=1)
    retry_backoff_seconds: float = Field(1.0, alias="SARAFAN_RETRY_BACKOFF_SECONDS", gt=0)
    consumer_batch: int = Field(100, alias="SARAFAN_CONSUMER_BATCH", ge=1)
    ack_wait_seconds: float = Field(30.0, alias="SARAFAN_ACK_WAIT_SECONDS", ge=1)
    nats_ping_seconds: int = Field(10, alias="SARAFAN_NATS_PING_SECONDS", ge=1)
    port: int = 0

    def database_name(self, service: str) -> str:
        return self.mongodb_database or f"sarafan_{service}"


T = TypeVar("T", bound=ServiceSettings)


def load_settings(cls: type[T], service: str) -> T:
    """Read settings; the HTTP port comes from SARAFAN_<SERVICE>_PORT (docs/contract.md)."""
    settings = cls()
    if not settings.port:
        env = os.environ.get(f"SARAFAN_{service.upper()}_PORT")
        settings.port = int(env) if env else DEFAULT_PORTS[service]
    return settings
