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
from pathlib import Path
from urllib.parse import unquote, urlsplit

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
#: Secrets that are URLs: the password in them is what is checked (none: nothing to check).
URL_SECRET_VARIABLES = frozenset({"MONGODB_URL", "SMTP_URL"})
#: Secrets that may be empty: no bootstrap key at all, the API takes only keys made with
#: `sarafan keys` (docs/operations.md).
MAY_BE_EMPTY = frozenset({"SARAFAN_API_TOKEN"})
#: A variable naming a secret's file instead of holding it (shared/settings.py).
FILE_SUFFIX = "_FILE"


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


def url_password(value: str) -> str | None:
    """The password in a URL (`scheme://user:password@host`), or None when it has none."""
    try:
        password = urlsplit(value).password
    except ValueError:
        return None
    return unquote(password) if password is not None else None


#: A NATS user's password as nats-server reads it from its environment (compose, the chart).
NATS_PASSWORD_VARIABLE = re.compile(r"NATS_[A-Z0-9]+_PASSWORD")


def value_refusal(name: str, value: str) -> str | None:
    """The refusal of one secret's value; a URL's password is checked, a URL without one is
    nothing secret; an empty value is refused unless `name` may be empty."""
    if not value and name.upper() in MAY_BE_EMPTY:
        return None
    if "://" in value:
        password = url_password(value)
        return None if password is None else refusal(f"{name} (its password)", password)
    if NATS_PASSWORD_VARIABLE.fullmatch(name.upper()) and value and not value[0].isalpha():
        # nats-server parses a variable's value like a configuration token: `-x…` or digits
        # are read as a number, and the server does not start.
        return (
            f"{name} must start with a letter (nats-server reads a value starting with '-' or "
            "a digit as a number); `sarafan secrets` makes such values"
        )
    return refusal(name, value)


def _is_secret_variable(name: str) -> bool:
    return bool(SECRET_VARIABLE.fullmatch(name)) or name in URL_SECRET_VARIABLES


def environment_refusals(environ: Mapping[str, str]) -> list[str]:
    """A refusal for every weak secret among the environment's secret variables (an empty
    one is refused too, except where empty means "none", `MAY_BE_EMPTY`); a `<NAME>_FILE`
    variable is read and its content checked as NAME."""
    refused = []
    for name in sorted(environ):
        if name.endswith(FILE_SUFFIX) and _is_secret_variable(name.removesuffix(FILE_SUFFIX)):
            secret = name.removesuffix(FILE_SUFFIX)
            try:
                value = Path(environ[name]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                refused.append(f"{name}: cannot read {environ[name]}: {exc.strerror}")
                continue
        elif _is_secret_variable(name):
            secret, value = name, environ[name]
        else:
            continue
        message = value_refusal(secret, value)
        if message is not None:
            refused.append(message)
    return refused


def directory_refusals(directory: Path) -> list[str]:
    """A refusal for every weak secret file in `directory` (compose's /run/secrets: one file a
    secret, named after it in lower case; a URL's password checked)."""
    refused = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        message = value_refusal(path.name, path.read_text(encoding="utf-8").strip())
        if message is not None:
            refused.append(message)
    return refused
