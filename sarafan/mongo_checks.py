"""What the embedded MongoDB (nx-27017) answers to the tools that start and check it: a real
`ping`, and whether its SQLite library overwrites deleted rows."""

from __future__ import annotations

from pymongo import MongoClient
from pymongo.errors import PyMongoError

LOCALHOST = "127.0.0.1"


def mongo_ping(port: int, host: str = LOCALHOST, timeout: float = 1.0) -> bool:
    """True when the server answers a real `ping` command (a TCP accept is not enough)."""
    millis = int(timeout * 1000)
    client: MongoClient = MongoClient(
        f"mongodb://{host}:{port}",
        directConnection=True,
        serverSelectionTimeoutMS=millis,
        connectTimeoutMS=millis,
        socketTimeoutMS=millis,
    )
    try:
        return bool(client.admin.command("ping").get("ok"))
    except PyMongoError:
        return False
    finally:
        client.close()


def sqlite_secure_delete(port: int, host: str = LOCALHOST, timeout: float = 2.0) -> bool | None:
    """Whether nx-27017's SQLite library overwrites the space a deleted or rewritten row leaves
    (`PRAGMA secure_delete`, which nx-27017 answers for a command it does not know by name);
    None when the server does not say (real MongoDB, an error)."""
    millis = int(timeout * 1000)
    client: MongoClient = MongoClient(
        f"mongodb://{host}:{port}", directConnection=True, serverSelectionTimeoutMS=millis
    )
    try:
        rows = client.admin.command({"secure_delete": 1}).get("result") or []
        return bool(rows[0]["secure_delete"]) if rows else None
    except (PyMongoError, LookupError, TypeError):
        return None
    finally:
        client.close()
