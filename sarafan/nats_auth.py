"""NATS accounts and per-service users: one table of permissions for compose, k8s and `sarafan up`.

Each service connects as its own user and may only publish its own events (`<service>.>`), its
own dead letters (`dlq.<service>.>`), the JetStream API calls it makes, and acks of its own
durable consumers; it receives only on its own inbox prefix (`_INBOX_<service>`), so no service
can read another's replies. The `integration` user is for outside services that subscribe to
the events: it reads every service's event subjects (never `dlq.>`) and creates, reads,
consumes and deletes only its configured durable consumers; it publishes nothing else. The
`admin` user (the operator CLI) may do anything in the application account; the `sys` user
belongs to the system account (server monitoring).

`python -m sarafan.nats_auth` prints the accounts block included by deploy/nats/nats.conf and
`python -m sarafan.nats_auth --helm` rewrites the generated blocks of deploy/k8s/nats/values.yaml;
tests check both files in the repository are exactly the generated text.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared import weak_secrets
from shared.keys import BUCKET as KEYS_BUCKET
from shared.keys import KEYS_OWNER
from shared.topology import ADMIN_USER, DLQ_STREAM, ERASURE_OWNER, EXTRA_STREAMS, STREAMS

APP_ACCOUNT = "SARAFAN"
SYSTEM_ACCOUNT = "SYS"
SYSTEM_USER = "sys"
INTEGRATION_USER = "integration"

#: The integration user's durable consumers. NATS permissions match whole subject tokens, so
#: "any name starting with integration-" cannot be written as a wildcard: each name is listed
#: (comma-separated, replacing the default) and granted on each service's event stream. The
#: deploy files are generated with the default; regenerating them with the variable set grants
#: its names instead.
INTEGRATION_CONSUMERS_VARIABLE = "SARAFAN_INTEGRATION_CONSUMERS"
INTEGRATION_PREFIX = "integration-"
DEFAULT_INTEGRATION_CONSUMERS: tuple[str, ...] = ("integration-example",)
# A consumer name is one subject token: no dots, wildcards, spaces or path separators.
_CONSUMER_NAME = re.compile(rf"{INTEGRATION_PREFIX}[A-Za-z0-9_-]+")


def declared_consumers(service: str) -> tuple[tuple[str, str], ...]:
    """The durable consumers a service creates, as (stream, durable name): read from the
    `subscriptions` its `services/<service>/consumers.py` declares (a service without that
    module reads no stream). Sorted by stream, in topology order, then by name, so the
    generated deploy files do not depend on the order of the handlers in the source."""
    name = f"services.{service}.consumers"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return ()
    subscriptions = getattr(module, "subscriptions", None)
    if subscriptions is None:
        raise LookupError(f"{name} declares no module-level `subscriptions`")
    order = {stream: i for i, stream in enumerate(STREAMS.values())}
    pairs = {(sub.stream, sub.durable) for sub in subscriptions.declared}
    return tuple(sorted(pairs, key=lambda pair: (order.get(pair[0], len(order)), pair)))


@functools.cache
def service_consumers() -> dict[str, tuple[tuple[str, str], ...]]:
    """Every service's durable consumers (`declared_consumers`), imported once."""
    return {service: declared_consumers(service) for service in STREAMS}


def __getattr__(name: str) -> Any:
    # `CONSUMERS` is computed on first use: importing this module for a name (the operator
    # CLI needs ADMIN_USER) must not import every service's consumers.
    if name == "CONSUMERS":
        return service_consumers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def inbox_prefix(service: str) -> str:
    """The reply-subject prefix a service's connection uses when it has its own user."""
    return f"_INBOX_{service}"


def password_variable(user: str) -> str:
    """The environment variable holding a user's password in compose and k8s."""
    return f"NATS_{user.upper()}_PASSWORD"


def integration_consumers(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The configured integration consumer names (SARAFAN_INTEGRATION_CONSUMERS, else the
    default); raises ValueError naming a name that does not start with `integration-` or is
    not a single subject token."""
    raw = environ.get(INTEGRATION_CONSUMERS_VARIABLE, "")
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    for name in names:
        if not _CONSUMER_NAME.fullmatch(name):
            raise ValueError(
                f"{INTEGRATION_CONSUMERS_VARIABLE}: {name!r} must start with "
                f"{INTEGRATION_PREFIX!r} followed by letters, digits, '-' or '_'"
            )
    return names or DEFAULT_INTEGRATION_CONSUMERS


def integration_permissions(consumers: Sequence[str]) -> dict[str, Any]:
    """Allow-lists of the integration user: subscribe to the public event subjects and its own
    inbox; publish only the JetStream API calls of a durable pull consumer, for the configured
    names on every service's event stream (not DLQ: dead letters may name erased members)."""
    api = "$JS.API"
    publish = [f"{api}.INFO"]
    publish += [f"{api}.STREAM.INFO.{stream}" for stream in STREAMS.values()]
    for stream in STREAMS.values():
        for name in consumers:
            publish += [
                f"{api}.CONSUMER.CREATE.{stream}.{name}",
                f"{api}.CONSUMER.CREATE.{stream}.{name}.>",
                f"{api}.CONSUMER.DURABLE.CREATE.{stream}.{name}",
                f"{api}.CONSUMER.INFO.{stream}.{name}",
                f"{api}.CONSUMER.DELETE.{stream}.{name}",
                f"{api}.CONSUMER.MSG.NEXT.{stream}.{name}",
                f"$JS.ACK.{stream}.{name}.>",
            ]
    subscribe = [f"{service}.>" for service in STREAMS]
    subscribe.append(f"{inbox_prefix(INTEGRATION_USER)}.>")
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


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
        # Erasure finds the member's messages in the own stream by subject (the subject state,
        # then each next message) and deletes them with their bytes overwritten.
        f"{api}.STREAM.MSG.GET.{own}",
        f"{api}.STREAM.MSG.DELETE.{own}",
        f"{api}.DIRECT.GET.{own}",
        f"{api}.DIRECT.GET.{own}.>",
        f"{api}.CONSUMER.LIST.{own}",
        f"{api}.CONSUMER.NAMES.{own}",
        f"{api}.CONSUMER.INFO.{own}.*",
    ]
    # The API keys' bucket (shared/keys.py): every service creates it if missing and watches
    # it (an ordered consumer of its own: ephemeral, flow-controlled); its owner writes keys.
    kv = f"KV_{KEYS_BUCKET}"
    publish += [
        f"{api}.STREAM.CREATE.{kv}",
        f"{api}.CONSUMER.CREATE.{kv}",
        f"{api}.CONSUMER.CREATE.{kv}.>",
        f"{api}.CONSUMER.INFO.{kv}.*",
        f"{api}.CONSUMER.DELETE.{kv}.*",
        f"{api}.STREAM.MSG.GET.{kv}",
        f"{api}.DIRECT.GET.{kv}.>",
        f"$JS.FC.{kv}.>",
    ]
    if service == KEYS_OWNER:
        publish.append(f"$KV.{KEYS_BUCKET}.>")
    if service == ERASURE_OWNER:
        # The service that owns erasure erases the member's dead letters too (their subject
        # ends with the original subject, so with the member's id): docs/operations.md.
        publish += [f"{api}.STREAM.MSG.GET.{DLQ_STREAM}", f"{api}.STREAM.MSG.DELETE.{DLQ_STREAM}"]
    for stream, durable in service_consumers()[service]:
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


def accounts(
    passwords: Mapping[str, str],
    consumers: Sequence[str] = DEFAULT_INTEGRATION_CONSUMERS,
) -> dict[str, Any]:
    """The `accounts` and `system_account` settings; `passwords` maps each user (each
    service, integration, admin, sys) to its password or to a reference such as
    `$NATS_ADMIN_PASSWORD`; `consumers` are the integration user's durable consumer names.
    A password given as such must be strong (shared/weak_secrets.py): ValueError otherwise,
    so no configuration with a weak one is ever written."""
    for user, password in passwords.items():
        if not _REFERENCE.fullmatch(password):
            weak_secrets.check(f"the NATS password of {user!r}", password)
    users = [{"user": ADMIN_USER, "password": passwords[ADMIN_USER]}]
    users += [
        {"user": name, "password": passwords[name], "permissions": service_permissions(name)}
        for name in STREAMS
    ]
    users.append(
        {
            "user": INTEGRATION_USER,
            "password": passwords[INTEGRATION_USER],
            "permissions": integration_permissions(consumers),
        }
    )
    return {
        "accounts": {
            APP_ACCOUNT: {"jetstream": "enabled", "users": users},
            SYSTEM_ACCOUNT: {"users": [{"user": SYSTEM_USER, "password": passwords[SYSTEM_USER]}]},
        },
        "system_account": SYSTEM_ACCOUNT,
    }


def users() -> tuple[str, ...]:
    return (ADMIN_USER, SYSTEM_USER, *STREAMS, INTEGRATION_USER)


# A variable reference such as $NATS_ADMIN_PASSWORD; subjects like `$JS.API.INFO` or
# `$KV.<bucket>.>` contain dots and must stay quoted, or the server reads them as variables.
_VARIABLE = re.compile(r"\$[A-Z_][A-Z0-9_]*")
# A password that is a reference, resolved where the server runs: `$VAR` (compose) or the Helm
# chart's `<< $VAR >>`; the environment there holds the value (checked by `check-secrets`).
_REFERENCE = re.compile(r"\$[A-Z_][A-Z0-9_]*|<< \$[A-Z_][A-Z0-9_]* >>")


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
    if isinstance(value, str) and _VARIABLE.fullmatch(value):
        return value  # an unquoted variable reference: resolved from the server's environment
    if value == "enabled":
        return value
    # JSON string quoting is valid NATS config and keeps `$JS...` and `>` literal.
    return json.dumps(value)


def nats_conf(
    passwords: Mapping[str, str], consumers: Sequence[str] = DEFAULT_INTEGRATION_CONSUMERS
) -> str:
    """The accounts block as nats-server configuration text."""
    settings = accounts(passwords, consumers)
    lines = [f"{key}: {_value(value, '')}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def env_references() -> dict[str, str]:
    """Passwords as `$NATS_<USER>_PASSWORD` references (compose: set in the nats container)."""
    return {name: f"${password_variable(name)}" for name in users()}


def helm_references() -> dict[str, str]:
    """Passwords as the official NATS Helm chart's raw `<< $VAR >>` references."""
    return {name: f"<< ${password_variable(name)} >>" for name in users()}


HEADER = (
    "# Generated by `python -m sarafan.nats_auth` from sarafan/nats_auth.py; do not edit by hand.\n"
    "# Passwords come from the nats-server environment (NATS_<USER>_PASSWORD): compose's\n"
    "# deploy/nats/entrypoint.sh exports each from its secret file (`sarafan secrets`).\n"
)

# ---------------------------------------------------------------------------------------------
# The Helm values: the chart's values.yaml is kept by hand except two blocks between markers
# (the accounts and the password variables' environment), which `--helm` regenerates.

HELM_VALUES = Path(__file__).resolve().parents[1] / "deploy/k8s/nats/values.yaml"
HELM_SECRET = "sarafan-nats"
_BEGIN = "# BEGIN generated {name} (python -m sarafan.nats_auth --helm): do not edit by hand"
_END = "# END generated {name}"
# Strings YAML reads as themselves unquoted (not booleans or null in YAML 1.1).
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.>-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    # A JSON string is a valid YAML double-quoted scalar ($, *, <<, >> stay literal).
    return json.dumps(value)


def _yaml(value: Any, indent: str) -> list[str]:
    """Block-style YAML lines of a mapping (lists of mappings as `- key: v` items)."""
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines += [f"{indent}{key}:", *_yaml(item, indent + "  ")]
        elif isinstance(item, list):
            lines.append(f"{indent}{key}:")
            for element in item:
                if isinstance(element, dict):
                    inner = _yaml(element, indent + "  ")
                    lines += [f"{indent}- {inner[0].lstrip()}", *inner[1:]]
                else:
                    lines.append(f"{indent}- {_yaml_scalar(element)}")
        else:
            lines.append(f"{indent}{key}: {_yaml_scalar(item)}")
    return lines


def helm_blocks(consumers: Sequence[str] = DEFAULT_INTEGRATION_CONSUMERS) -> dict[str, Any]:
    """The generated parts of the Helm values: `config.merge` accounts, `container.env`.

    The chart's `container.env` is a map (variable name → a string, or a map such as
    `valueFrom`) that its `nats.env` helper turns into the container's list; a list there
    would render variables named `0`, `1`, …"""
    env = {
        password_variable(user): {
            "valueFrom": {"secretKeyRef": {"name": HELM_SECRET, "key": password_variable(user)}}
        }
        for user in users()
    }
    return {"accounts": accounts(helm_references(), consumers), "password env": {"env": env}}


def helm_values(text: str, consumers: Sequence[str] = DEFAULT_INTEGRATION_CONSUMERS) -> str:
    """`text` (a values.yaml) with each generated block replaced by its current content."""
    lines = text.splitlines()
    for name, block in helm_blocks(consumers).items():
        begin, end = _BEGIN.format(name=name), _END.format(name=name)
        starts = [i for i, line in enumerate(lines) if line.strip() == begin]
        stops = [i for i, line in enumerate(lines) if line.strip() == end]
        if len(starts) != 1 or len(stops) != 1 or stops[0] < starts[0]:
            raise ValueError(f"values.yaml needs one {begin!r} … {end!r} pair")
        start, stop = starts[0], stops[0]
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        lines[start + 1 : stop] = _yaml(block, indent)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sarafan.nats_auth",
        description="Print deploy/nats/accounts.conf, or regenerate the Helm values' accounts. "
        f"{INTEGRATION_CONSUMERS_VARIABLE} (comma-separated, each starting with "
        f"{INTEGRATION_PREFIX!r}) lists the integration user's consumers "
        f"(default {', '.join(DEFAULT_INTEGRATION_CONSUMERS)}).",
    )
    parser.add_argument(
        "--helm",
        nargs="?",
        const=HELM_VALUES,
        type=Path,
        metavar="VALUES",
        help="rewrite the generated blocks of this values.yaml (default: the repository's)",
    )
    args = parser.parse_args(argv)
    try:
        consumers = integration_consumers()
    except ValueError as exc:
        parser.error(str(exc))
    if args.helm is None:
        sys.stdout.write(HEADER + nats_conf(env_references(), consumers))
    else:
        args.helm.write_text(helm_values(args.helm.read_text(), consumers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
