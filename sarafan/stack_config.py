"""Where the embedded stack (`sarafan up`) keeps its data and which ports it listens on: one
nats-server, one nx-27017 per service's database, the services. From the environment, or on
free ports (tests, benchmarks)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from sarafan.embedded import JOURNAL_MODES, LOCALHOST, free_port
from shared.topology import MONGO_PORT, NATS_HTTP_PORT, NATS_PORT, PORTS, SERVICES


def mongo_name(service: str) -> str:
    """The name (pid file, log) of the nx-27017 holding `service`'s database."""
    return f"nx-27017-{service}"


class StackError(RuntimeError):
    """The stack could not start; the message names the component and its log file."""


def journal(value: str) -> str:
    """A SARAFAN_MONGO_JOURNAL value, checked."""
    if value not in JOURNAL_MODES:
        raise StackError(
            f"SARAFAN_MONGO_JOURNAL={value!r} is not one of {', '.join(JOURNAL_MODES)}"
        )
    return value


@dataclass(frozen=True)
class StackConfig:
    """Where the embedded stack keeps its data and which ports it listens on."""

    home: Path
    nats_port: int = NATS_PORT
    nats_http_port: int = NATS_HTTP_PORT
    #: One nx-27017 per service's database, each its own process (so the services' database
    #: work runs on every core): the first port, then one more for each service, in order.
    mongo_port: int = MONGO_PORT
    service_ports: Mapping[str, int] = field(default_factory=lambda: dict(PORTS))
    #: Each service's nx-27017 port; by default `mongo_port` and the ones after it.
    mongo_ports: Mapping[str, int] = field(default_factory=dict)
    #: nx-27017's SQLite journal (sarafan/embedded.py JOURNAL_MODES): `wal`, scrubbed after each
    #: erasure (shared/scrub.py); `truncate` is slower and never keeps an old page in a journal.
    mongo_journal: str = "wal"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> StackConfig:
        """SARAFAN_HOME (default ./.sarafan), the SARAFAN_*_PORT variables and
        SARAFAN_MONGO_JOURNAL."""

        def port(name: str, default: int) -> int:
            value = environ.get(name)
            if not value:
                return default
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise StackError(f"{name}={value!r} is not a TCP port number")
            return int(value)

        return cls(
            home=Path(environ.get("SARAFAN_HOME") or ".sarafan").absolute(),
            nats_port=port("SARAFAN_NATS_PORT", NATS_PORT),
            nats_http_port=port("SARAFAN_NATS_HTTP_PORT", NATS_HTTP_PORT),
            mongo_port=port("SARAFAN_MONGO_PORT", MONGO_PORT),
            mongo_journal=journal(environ.get("SARAFAN_MONGO_JOURNAL") or "wal"),
            service_ports={
                name: port(f"SARAFAN_{name.upper()}_PORT", default)
                for name, default in PORTS.items()
            },
        )

    @classmethod
    def with_free_ports(cls, home: Path) -> StackConfig:
        """A stack that does not collide with a running `sarafan up` (tests)."""
        mongo_ports = {name: free_port() for name in SERVICES}
        return cls(
            home=home,
            nats_port=free_port(),
            nats_http_port=free_port(),
            mongo_port=mongo_ports[SERVICES[0]],
            service_ports={name: free_port() for name in SERVICES},
            mongo_ports=mongo_ports,
        )

    def mongo_port_of(self, service: str) -> int:
        """The port of the nx-27017 holding `service`'s database."""
        if service in self.mongo_ports:
            return self.mongo_ports[service]
        return self.mongo_port + SERVICES.index(service)

    def mongodb_url(self, service: str) -> str:
        """Where `service`'s database is served (its own nx-27017)."""
        return f"mongodb://{LOCALHOST}:{self.mongo_port_of(service)}"

    @property
    def nats_url(self) -> str:
        return f"nats://{LOCALHOST}:{self.nats_port}"

    def service_url(self, name: str) -> str:
        return f"http://{LOCALHOST}:{self.service_ports[name]}"


class StackDatabases:
    """Every service's database of a running stack, each from its own nx-27017, by name
    (`sarafan_<service>`; any other name is kept beside the first service's): what tests and
    benchmarks read and seed."""

    def __init__(self, config: StackConfig, **options: Any) -> None:
        self.clients = {
            name: AsyncMongoClient(config.mongodb_url(name), **options) for name in SERVICES
        }

    def __getitem__(self, database: str) -> AsyncDatabase[dict[str, Any]]:
        service = database.removeprefix("sarafan_")
        client = self.clients.get(service, self.clients[SERVICES[0]])
        return client[database]

    async def drop_database(self, database: str) -> None:
        await self[database].client.drop_database(database)

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
