"""Fixtures for the operations tests: a nats-server with the per-service users of compose."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sarafan.embedded import LOCALHOST, free_port, nats_child
from sarafan.nats_auth import nats_conf, users
from tests.conftest import EmbeddedServer, started_on_free_ports


@dataclass
class SecuredNats:
    """A nats-server configured with sarafan.nats_auth's accounts, and its users' passwords."""

    server: EmbeddedServer
    passwords: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return self.server.url

    def settings_for(self, service: str) -> dict[str, str]:
        """Settings overrides (env alias names) that make a service connect as its own user."""
        return {"NATS_USER": service, "NATS_PASSWORD": self.passwords[service]}


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[SecuredNats]:
    passwords = {name: secrets.token_urlsafe(32) for name in users()}

    def make() -> EmbeddedServer:
        port = free_port()
        child = nats_child(tmp_path / "nats", port, free_port(), accounts=nats_conf(passwords))
        return EmbeddedServer(child, f"nats://{LOCALHOST}:{port}")

    server = started_on_free_ports(make)
    try:
        yield SecuredNats(server, passwords, server.child.log_path)
    finally:
        server.stop()


@pytest.fixture
def db_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"
