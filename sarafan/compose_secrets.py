"""`sarafan secrets`: a strong random value for every secret docker compose reads, one file each.

docker-compose.yml mounts each file of `secrets/` as a compose secret (`/run/secrets/<name>` in
the containers that need it) and points the matching `<NAME>_FILE` variable at it, so no secret
is in `.env`, in a container's environment or on a command line. The MongoDB users' connection
URLs carry their passwords: the mongo container's first start creates each user from its URL
(deploy/mongo/initdb/sarafan-users.js), the service connects with the same file.

A file that exists is kept (rotating one means changing it where it is used, see
docs/operations.md), unless `--force`. The directory is made owner-only (0700); the files are
0644 inside it, because compose bind-mounts them into the containers with their host owner and
mode and the containers read them as their own unprivileged users (sarafan 10001, mongodb 999,
grafana 472); the directory keeps everyone else on the host out.
"""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from sarafan.nats_auth import password_variable, users
from shared.topology import SERVICES

#: Where docker-compose.yml reads the secret files from (relative to the repository).
DIRECTORY = Path("secrets")
#: The MongoDB compose runs (service `mongo`, replica set `rs0`).
MONGO = "mongo:27017"
MONGO_OPTIONS = "replicaSet=rs0&authSource=admin"
#: The MongoDB user of `sarafan backup` / `sarafan restore` (roles backup and restore).
BACKUP_USER = "backup"


def token() -> str:
    """43 random URL-safe characters (256 bits), the first a letter: nats-server reads a
    password given as a variable like a configuration token, and one starting with `-` or a
    digit as a number (the same rule for every secret keeps it simple)."""
    while True:
        value = secrets.token_urlsafe(32)
        if value[0].isalpha():
            return value


def mongodb_url(user: str, password: str) -> str:
    """A compose service's connection URL, as its own MongoDB user."""
    return f"mongodb://{user}:{password}@{MONGO}/?{MONGO_OPTIONS}"


def secret_files() -> dict[str, Callable[[], str]]:
    """Every secret file compose needs → how to make its value."""
    made: dict[str, Callable[[], str]] = {
        "sarafan_api_token": token,
        "sarafan_unsubscribe_secret": token,
        "mongo_root_password": token,
        "grafana_admin_password": token,
    }
    for user in users():
        made[password_variable(user).lower()] = token
    for user in (*SERVICES, BACKUP_USER):
        made[f"mongodb_url_{user}"] = lambda user=user: mongodb_url(user, token())
    return made


def write_secrets(directory: Path, force: bool = False) -> list[tuple[str, bool]]:
    """Write each missing secret file (each one, with `force`); (name, written) for each."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    done = []
    for name, make in sorted(secret_files().items()):
        path = directory / name
        if path.exists() and not force:
            done.append((name, False))
            continue
        # Created with the final mode: no moment where the value is readable more widely.
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(make() + "\n")
        path.chmod(0o644)
        done.append((name, True))
    return done


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=DIRECTORY,
        help=f"where to write them (default {DIRECTORY}/, what docker-compose.yml reads)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace existing files too (rotates every secret)"
    )


def main(directory: Path, force: bool, out: Callable[[str], None] = print) -> int:
    for name, written in write_secrets(directory, force):
        out(f"{'wrote' if written else 'kept '} {directory / name}")
    return 0
