"""The secrets `sarafan up` keeps in SARAFAN_HOME: the bootstrap API token and the NATS users'
passwords, made on first use, and refused when weak (shared/weak_secrets.py).

Each raises ValueError naming the variable or file that holds a weak secret; `sarafan up`
stops before starting anything.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from sarafan.nats_auth import users
from shared import weak_secrets

#: Bytes of randomness in a secret made here (43 characters once encoded).
RANDOM_BYTES = 32


def api_token(home: Path, environ: Mapping[str, str] = os.environ) -> tuple[str, bool]:
    """SARAFAN_API_TOKEN, else the one stored in home/api-token, else a new one stored
    there (mode 0600). Returns the token and whether it was just created."""
    if environ.get("SARAFAN_API_TOKEN"):
        return weak_secrets.check("SARAFAN_API_TOKEN", environ["SARAFAN_API_TOKEN"]), False
    path = home / "api-token"
    if path.exists():
        return weak_secrets.check(str(path), path.read_text().strip()), False
    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(RANDOM_BYTES)
    _write_private(path, token + "\n")
    return token, True


def _write_private(path: Path, text: str) -> None:
    # O_EXCL with the mode at creation: never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def nats_passwords(home: Path) -> dict[str, str]:
    """The NATS password of every user (each service, integration, admin, sys), stored in
    home/nats-users.json (mode 0600) on first use so they survive restarts; the operator
    CLI reads the admin password from there. A weak one in the file is refused, not replaced:
    clients configured with it would stop working without a word."""
    path = home / "nats-users.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    for user, password in stored.items():
        if password:
            weak_secrets.check(f"the password of {user!r} in {path}", password)
    missing = [name for name in users() if not stored.get(name)]
    if missing:
        stored |= {name: secrets.token_urlsafe(RANDOM_BYTES) for name in missing}
        home.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        _write_private(path, json.dumps(stored, indent=2) + "\n")
    return stored
