"""Settings read from the environment: every service's (pydantic-settings), and where an
operator's command finds the running stack (`OpsConfig`).

Every secret setting (`SECRET_SETTINGS`) may instead be given as `<NAME>_FILE`, the path of a
file holding the value: compose's `secrets:` and Kubernetes' secret volumes mount such files, so
no secret sits in a container's environment or on a command line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared import weak_secrets
from shared.topology import ADMIN_USER, MONGO_PORT, NATS_PORT, PORTS, SERVICES

#: Each service's default HTTP port (shared/topology.py).
DEFAULT_PORTS = PORTS
#: Writes a minute of an API key that does not say (SARAFAN_KEY_RATE_PER_MINUTE): a busy
#: public sign-up page (a join every half second, sustained) stays under it.
DEFAULT_KEY_RATE_PER_MINUTE = 120

#: Every setting holding a secret (a password, a token, a signing key, or a URL that may carry a
#: password), in any service: each is also read from the file `<NAME>_FILE` names.
SECRET_SETTINGS: frozenset[str] = frozenset(
    {
        "NATS_PASSWORD",
        "MONGODB_URL",
        "SARAFAN_API_TOKEN",
        "SARAFAN_UNSUBSCRIBE_SECRET",
        "SMTP_URL",
        "WEBHOOK_SECRET",
        "TELEGRAM_BOT_TOKEN",
    }
)
#: The suffix of the variable naming a secret's file.
FILE_SUFFIX = "_FILE"


class SecretFileError(ValueError):
    """A `<NAME>_FILE` that cannot be used: unreadable, or set beside `<NAME>` itself."""


def secret_from_file(name: str, path: str) -> str:
    """The content of the secret file `path` (for the variable `name`), surrounding whitespace
    (the newline an editor or `echo` leaves) removed."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretFileError(f"{name}{FILE_SUFFIX}: cannot read {path}: {exc.strerror}") from None


def environ_secret(environ: Mapping[str, str], name: str) -> str | None:
    """A secret from the environment: `name` itself, or the content of `<name>_FILE`; None when
    neither is set. Both set is refused: which one wins would be a guess."""
    path = environ.get(name + FILE_SUFFIX)
    if not path:
        return environ.get(name)
    if environ.get(name) is not None:
        raise SecretFileError(f"set {name} or {name}{FILE_SUFFIX}, not both")
    return secret_from_file(name, path)


class SecretFiles(PydanticBaseSettingsSource):
    """The settings source reading `<NAME>_FILE` for every field whose variable is a secret."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is done in __call__

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in self.settings_cls.model_fields.values():
            name = field.alias
            if name in SECRET_SETTINGS and os.environ.get(name + FILE_SUFFIX):
                values[name] = environ_secret(os.environ, name)
        return values


class ServiceSettings(BaseSettings):
    """What a service needs to run; each service subclasses it with its own knobs."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    nats_url: str = Field(f"nats://127.0.0.1:{NATS_PORT}", alias="NATS_URL")
    nats_user: str | None = Field(None, alias="NATS_USER")
    nats_password: str | None = Field(None, alias="NATS_PASSWORD")
    mongodb_url: str = Field(f"mongodb://127.0.0.1:{MONGO_PORT}", alias="MONGODB_URL")
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
    #: Writes a minute of an API key that does not say (shared/http/rate_limit.py).
    key_rate_per_minute: int = Field(
        DEFAULT_KEY_RATE_PER_MINUTE, alias="SARAFAN_KEY_RATE_PER_MINUTE", ge=1
    )
    #: How far ahead of the receiver's clock an event may say something happened (clocks
    #: differ a little); a later fact time is read as this moment (shared/events/binding.py).
    event_clock_tolerance_seconds: float = Field(
        300.0, alias="SARAFAN_EVENT_CLOCK_TOLERANCE_SECONDS", ge=0, le=86400
    )
    #: Seconds after an erasure before the embedded store's files are scrubbed of it
    #: (shared/scrub.py); erasures meanwhile share one scrub.
    erasure_scrub_seconds: float = Field(5.0, alias="SARAFAN_ERASURE_SCRUB_SECONDS", ge=0, le=3600)
    port: int = 0

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # A secret's file comes right after the variable itself (both set is refused).
        secret_files = SecretFiles(settings_cls)
        return init_settings, env_settings, secret_files, dotenv_settings, file_secret_settings

    @field_validator("api_token")
    @classmethod
    def _strong_api_token(cls, value: str) -> str:
        # Empty: no bootstrap key, only keys made with `sarafan keys` (docs/operations.md).
        return weak_secrets.check("SARAFAN_API_TOKEN", value) if value else value

    @field_validator("nats_password")
    @classmethod
    def _strong_nats_password(cls, value: str | None) -> str | None:
        # None: a NATS without users (tests, benchmarks); compose and k8s always set one.
        return weak_secrets.check("NATS_PASSWORD", value) if value else value

    def database_name(self, service: str) -> str:
        return self.mongodb_database or f"sarafan_{service}"


T = TypeVar("T", bound=ServiceSettings)


def load_settings(cls: type[T], service: str) -> T:
    """Read settings; the HTTP port comes from SARAFAN_<SERVICE>_PORT (docs/contract.md).
    Invalid settings (a weak secret among them) stop the process with one line naming each."""
    try:
        settings = cls()
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise SystemExit(f"sarafan {service}: refusing to start: {problems}") from None
    except SecretFileError as exc:
        raise SystemExit(f"sarafan {service}: refusing to start: {exc}") from None
    if not settings.port:
        env = os.environ.get(f"SARAFAN_{service.upper()}_PORT")
        settings.port = int(env) if env else DEFAULT_PORTS[service]
    return settings


def _problem(error: ErrorDetails) -> str:
    """One validation error as a line: the variable and the message (a refused secret's message
    names its variable already; pydantic's "Value error, " prefix goes). Never the value."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ValueError):
        return str(cause)
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error['msg']}"


@dataclass(frozen=True)
class OpsConfig:
    """Where the running stack is and how to authenticate, from the environment or from what
    `sarafan up` stored in SARAFAN_HOME (the NATS admin password, the API token).

    In the kernel, not with the tools, because the services' own commands (`sarafan members
    import`, `sarafan keys`) read their API token here too."""

    nats_url: str
    nats_user: str | None
    nats_password: str | None
    engagement_url: str
    api_token: str
    #: Where the activities service answers (its volunteering figures in `sarafan stats`).
    activities_url: str = f"http://127.0.0.1:{PORTS['activities']}"
    #: The MongoDB `sarafan backup` and `sarafan restore` work on (a user reading and writing
    #: every service's database: compose's and k8s' `backup`); None next to `sarafan up`, whose
    #: nx-27017s serve one service's database each, from SARAFAN_MONGO_PORT on.
    mongodb_url: str | None = None
    mongo_port: int = MONGO_PORT

    def mongodb_url_of(self, service: str) -> str:
        """Where `service`'s database is: MONGODB_URL, else its nx-27017 of `sarafan up`."""
        if self.mongodb_url:
            return self.mongodb_url
        return f"mongodb://127.0.0.1:{self.mongo_port + SERVICES.index(service)}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> OpsConfig:
        home = Path(environ.get("SARAFAN_HOME") or ".sarafan")
        user, password = environ.get("NATS_USER"), environ_secret(environ, "NATS_PASSWORD")
        stored = home / "nats-users.json"
        if not user and stored.exists():
            user, password = ADMIN_USER, json.loads(stored.read_text()).get(ADMIN_USER)
        token = environ_secret(environ, "SARAFAN_API_TOKEN") or ""
        if not token and (home / "api-token").exists():
            token = (home / "api-token").read_text().strip()
        nats_port = environ.get("SARAFAN_NATS_PORT") or str(NATS_PORT)
        engagement_port = environ.get("SARAFAN_ENGAGEMENT_PORT") or str(PORTS["engagement"])
        activities_port = environ.get("SARAFAN_ACTIVITIES_PORT") or str(PORTS["activities"])
        mongo_port = environ.get("SARAFAN_MONGO_PORT") or str(MONGO_PORT)
        return cls(
            nats_url=environ.get("NATS_URL") or f"nats://127.0.0.1:{nats_port}",
            nats_user=user or None,
            nats_password=password or None,
            engagement_url=environ.get("SARAFAN_ENGAGEMENT_URL")
            or f"http://127.0.0.1:{engagement_port}",
            api_token=token,
            activities_url=environ.get("SARAFAN_ACTIVITIES_URL")
            or f"http://127.0.0.1:{activities_port}",
            mongodb_url=environ_secret(environ, "MONGODB_URL") or None,
            mongo_port=int(mongo_port),
        )
