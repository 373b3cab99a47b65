"""Secrets Sarafan refuses to run with: shorter than 32 characters, or one of the example values
the repository ships.

`.env.example` and the Kubernetes manifests hold placeholders (`change-me-api-token`,
`change-me`) that anyone can read; a stack started from a copy without editing them would
give every scope to whoever reads the repository. The services (their settings), `sarafan up`,
the NATS permission table and `sarafan check-secrets` (which compose runs before anything
else) all refuse them with the same rule. A test reads the repository's example files and fails
when a placeholder there is missing from `EXAMPLE_SECRETS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: The shortest secret accepted (what `secrets.token_urlsafe(24)` gives).
MIN_LENGTH = 32

#: How to make a good one; every refusal says it.
GENERATE = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'

#: Every example or placeholder secret in .env.example, deploy/, the docs and the README.
EXAMPLE_SECRETS: frozenset[str] = frozenset(
    {
        # deploy/k8s/base/config.yaml, deploy/k8s/mongodb/replica-set.yaml
        "change-me",
        # .env.example
        "change-me-api-token",
        "change-me-mongo",
        "change-me-nats-members",
        "change-me-nats-engagement",
        "change-me-nats-campaigns",
        "change-me-nats-notifier",
        "change-me-nats-activities",
        "change-me-nats-admin",
        "change-me-nats-sys",
        "change-me-nats-integration",
        "change-me-grafana",
        "change-me-unsubscribe-secret-of-32-characters",
        "change-me-to-32-random-characters-or-more",
    }
)

#: Environment variables `sarafan check-secrets` treats as secrets.
SECRET_VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*_(PASSWORD|TOKEN|SECRET)")
#: Secrets that may be empty: no bootstrap key at all, the API takes only keys made with
#: `sarafan keys` (docs/operations.md).
MAY_BE_EMPTY = frozenset({"SARAFAN_API_TOKEN"})


def weakness(value: str) -> str | None:
    """Why `value` is not an acceptable secret, or None when it is."""
    if value.strip() in EXAMPLE_SECRETS:
        return "is an example value from the repository"
    if len(value) < MIN_LENGTH:
        return f"is shorter than {MIN_LENGTH} characters"
    return None


def refusal(name: str, value: str) -> str | None:
    """The message refusing `value` as the secret `name`, or None when it is acceptable."""
    why = weakness(value)
    if why is None:
        return None
    return f"{name} {why}; generate one with: {GENERATE}"


def check(name: str, value: str) -> str:
    """`value` when it is an acceptable secret; ValueError naming `name` otherwise."""
    message = refusal(name, value)
    if message is not None:
        raise ValueError(message)
    return value


def environment_refusals(environ: Mapping[str, str]) -> list[str]:
    """A refusal for every weak secret among the environment's secret variables (an empty
    one is refused too, except where empty means "none", `MAY_BE_EMPTY`)."""
    refused = []
    for name in sorted(environ):
        if not SECRET_VARIABLE.fullmatch(name):
            continue
        if not environ[name] and name in MAY_BE_EMPTY:
            continue
        message = refusal(name, environ[name])
        if message is not None:
            refused.append(message)
    return refused
