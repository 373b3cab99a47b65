"""NATS accounts and per-service users: one table of permissions for compose, k8s and `sarafan up`.

Each service connects as its own user and may only publish its own events (`<service>.>`), its
own dead letters (`dlq.<service>.>`), the JetStream API calls it makes, and acks of its own
durable consumers; it receives only on its own inbox prefix (`_INBOX_<service>`), so no service
can read another's replies. The `admin` user (the operator CLI) may do anything in the
application account; the `sys` user belongs to the system account (server monitoring).

`python -m shared.nats_auth` prints the accounts block included by deploy/nats/nats.conf; a
test checks the file in the repository is exactly that text, and the same for the Helm values.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from shared.bus import DLQ_STREAM, STREAMS

APP_ACCOUNT = "SARAFAN"
SYSTEM_ACCOUNT = "SYS"
ADMIN_USER = "admin"
SYSTEM_USER = "sys"

#: The durable consumers each service creates, as (stream, durable name). A service that adds a
#: consumer adds it here too (tests/ops/test_nats_permissions.py checks the two agree).
CONSUMERS: dict[str, tuple[tuple[str, str], ...]] = {
    "members": (),
    "engagement": (("MEMBERS", "engagement-members"), ("ENGAGEMENT", "engagement-activity")),
    "campaigns": (("MEMBERS", "campaigns-members"), ("ENGAGEMENT", "campaigns-engagement")),
    "notifier": (
        ("MEMBERS", "notifier-members"),
        ("ENGAGEMENT", "notifier-engagement"),
        ("CAMPAIGNS", "notifier-campaigns"),
    ),
}

#: Streams a service may declare besides its own and DLQ: the notifier declares its sources
#: ahead of their producers (same config), so it can start alone.
EXTRA_STREAMS: dict[str, tuple[str, ...]] = {
    "notifier": ("MEMBERS", "ENGAGEMENT", "CAMPAIGNS"),
}


#: The service whose erasure purges the dead-letter stream of a member's messages.
ERASURE_OWNER = "members"


def inbox_prefix(service: str) -> str:
    """The reply-subject prefix a service's connection uses when it has its own user."""
    return f"_INBOX_{service}"


def password_variable(user: str) -> str:
    """The environment variable holding a user's password in compose and k8s."""
    return f"NATS_{user.upper()}_PASSWORD"


def service_permissions(service: str) -> dict[str, Any]:
    """Publish and subscribe allow-lists of one service's user (everything else is denied)."""
    own = STREAMS[service]
    api = "$JS.API"
    publish = [
        f"{service}.>",
        f"dlq.{service}.>",
        f"{api}.INFO",
        f"{api}.STREAM.INFO.*",
    ]
    for stream in (own, DLQ_STREAM, *EXTRA_STREAMS.get(service, ())):
        publish.append(f"{api}.STREAM.CREATE.{stream}")
    publish += [
        # Erasure purges the member's subjects from the own stream and reads its last message.
        f"{api}.STREAM.PURGE.{own}",
        f"{api}.STREAM.MSG.GET.{own}",
        f"{api}.DIRECT.GET.{own}",
        f"{api}.DIRECT.GET.{own}.>",
        f"{api}.CONSUMER.LIST.{own}",
        f"{api}.CONSUMER.NAMES.{own}",
        f"{api}.CONSUMER.INFO.{own}.*",
    ]
    if service == ERASURE_OWNER:
        # The service that owns erasure purges the member's dead letters too (their subject
        # ends with the original subject, so with the member's id): docs/operations.md.
        publish.append(f"{api}.STREAM.PURGE.{DLQ_STREAM}")
    for stream, durable in CONSUMERS[service]:
        publish += [
            f"{api}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"{api}.CONSUMER.CREATE.{stream}.{durable}",
            f"{api}.CONSUMER.CREATE.{stream}.{durable}.>",
            f"{api}.CONSUMER.INFO.{stream}.{durable}",
            f"{api}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    return {
        "publish": {"allow": list(dict.fromkeys(publish))},
        "subscribe": {"allow": [f"{inbox_prefix(service)}.>"]},
    }


def accounts(passwords: Mapping[str, str]) -> dict[str, Any]:
    """The `accounts` and `system_account` settings; `passwords` maps each user (the four
    services, admin, sys) to its password or to a reference such as `$NATS_ADMIN_PASSWORD`."""
    users = [{"user": ADMIN_USER, "password": passwords[ADMIN_USER]}]
    users += [
        {"user": name, "password": passwords[name], "permissions": service_permissions(name)}
        for name in STREAMS
    ]
    return {
        "accounts": {
            APP_ACCOUNT: {"jetstream": "enabled", "users": users},
            SYSTEM_ACCOUNT: {"users": [{"user": SYSTEM_USER, "password": passwords[SYSTEM_USER]}]},
        },
        "system_account": SYSTEM_ACCOUNT,
    }


def users() -> tuple[str, ...]:
    return (ADMIN_USER, SYSTEM_USER, *STREAMS)


def _value(value: Any, indent: str) -> str:
    if isinstance(value, dict):
        inner = indent + "  "
        body = "".join(f"{inner}{k}: {_value(v, inner)}\n" for k, v in value.items())
        return "{\n" + body + indent + "}"
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value) and len(value) <= 2:
            return "[" + ", ".join(_value(v, indent) for v in value) + "]"
        inner = indent + "  "
        return "[\n" + "".join(f"{inner}{_value(v, inner)}\n" for v in value) + indent + "]"
    if isinstance(value, str) and value.startswith("$") and not value.startswith("$JS"):
        return value  # an unquoted variable reference: resolved from the server's environment
    if value == "enabled":
        return value
    # JSON string quoting is valid NATS config and keeps `$JS...` and `>` literal.
    return json.dumps(value)


def nats_conf(passwords: Mapping[str, str]) -> str:
    """The accounts block as nats-server configuration text."""
    lines = [f"{key}: {_value(value, '')}" for key, value in accounts(passwords).items()]
    return "\n".join(lines) + "\n"


def env_references() -> dict[str, str]:
    """Passwords as `$NATS_<USER>_PASSWORD` references (compose: set in the nats container)."""
    return {name: f"${password_variable(name)}" for name in users()}


def helm_references() -> dict[str, str]:
    """Passwords as the official NATS Helm chart's raw `<< $VAR >>` references."""
    return {name: f"<< ${password_variable(name)} >>" for name in users()}


HEADER = (
    "# Generated by `python -m shared.nats_auth` from shared/nats_auth.py; do not edit by hand.\n"
    "# Passwords come from the nats-server environment (NATS_<USER>_PASSWORD, see .env.example).\n"
)


if __name__ == "__main__":
    sys.stdout.write(HEADER + nats_conf(env_references()))
