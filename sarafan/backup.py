"""`sarafan backup DIR` and `sarafan restore BACKUP`: every service's MongoDB database and every
JetStream stream, on the embedded stack, compose and Kubernetes alike.

A backup is a directory `DIR/<UTC time>/` holding
- `mongodb/<database>/<collection>.bson` and `.metadata.json`: mongodump's layout (the documents
  as BSON one after the other, the indexes in canonical extended JSON), so `mongorestore` reads
  it too; written through PyMongo, so it works on nx-27017 as on MongoDB;
- `nats/<STREAM>/backup.json` and `stream.tar.s2`: `nats stream backup`'s layout, made through
  the JetStream API (sarafan/stream_backup.py), consumers and their positions included.

Restore order: MongoDB first, then the streams, then start the services. The services declare
their streams when they start: started first they would make empty streams the snapshot cannot
be restored over, and consume from positions that do not match their restored databases.
A consistent backup is taken with the services stopped (docs/operations.md, "Backup and
restore"); each part is refused over existing data unless `--force`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bson import decode_file_iter
from bson.codec_options import CodecOptions
from bson.json_util import CANONICAL_JSON_OPTIONS, dumps, loads
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.database import Database

from sarafan import stream_backup
from sarafan.ops import OpsError, connect
from shared.settings import OpsConfig
from shared.topology import SERVICES

#: The databases of a backup: each service's own (its default name, `sarafan_<service>`).
DATABASES = tuple(f"sarafan_{service}" for service in SERVICES)
INSERT_BATCH = 1000
RAW = CodecOptions(document_class=RawBSONDocument)
#: Index options kept as they are when an index is made again.
INDEX_OPTIONS = ("unique", "sparse", "expireAfterSeconds", "partialFilterExpression")


def _client(config: OpsConfig, database: str) -> MongoClient[Any]:
    """A client of the server holding `database` (`sarafan_<service>`; one MongoDB in compose
    and k8s, each service's own nx-27017 next to `sarafan up`)."""
    service = database.removeprefix("sarafan_")
    url = config.mongodb_url_of(service if service in SERVICES else SERVICES[0])
    return MongoClient(url, serverSelectionTimeoutMS=5000)


def dump_database(db: Database[Any], directory: Path) -> int:
    """Each collection of `db` into `directory` (mongodump's files); the documents written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for name in sorted(db.list_collection_names()):
        if name.startswith("system."):
            continue
        collection = db[name]
        with open(directory / f"{name}.bson", "wb") as out:
            for batch in collection.find_raw_batches({}):
                out.write(batch)
                written += _count_documents(batch)
        metadata = {
            "indexes": list(collection.list_indexes()),
            "collectionName": name,
            "type": "collection",
            "options": {},
        }
        (directory / f"{name}.metadata.json").write_text(
            dumps(metadata, json_options=CANONICAL_JSON_OPTIONS) + "\n"
        )
    return written


def _count_documents(batch: bytes) -> int:
    """How many BSON documents a raw batch holds (each starts with its int32 length)."""
    count, offset = 0, 0
    while offset < len(batch):
        offset += int.from_bytes(batch[offset : offset + 4], "little")
        count += 1
    return count


def restore_database(db: Database[Any], directory: Path, replace: bool = False) -> int:
    """The collections dumped in `directory` into `db`, indexes first; the documents written.
    A collection holding documents is refused unless `replace` (then it is dropped)."""
    restored = 0
    for data in sorted(directory.glob("*.bson")):
        name = data.name.removesuffix(".bson")
        collection = db[name]
        if collection.find_one({}, {"_id": 1}) is not None:
            if not replace:
                raise OpsError(f"{db.name}.{name} holds documents: restore into an empty one")
            collection.drop()
        metadata = loads((directory / f"{name}.metadata.json").read_text())
        for index in metadata.get("indexes", []):
            if index["name"] == "_id_":
                continue
            options = {k: index[k] for k in INDEX_OPTIONS if k in index}
            collection.create_index(list(index["key"].items()), name=index["name"], **options)
        with open(data, "rb") as source:
            batch: list[RawBSONDocument] = []
            for document in decode_file_iter(source, RAW):
                batch.append(document)
                if len(batch) >= INSERT_BATCH:
                    collection.insert_many(batch, ordered=True)
                    restored, batch = restored + len(batch), []
            if batch:
                collection.insert_many(batch, ordered=True)
                restored += len(batch)
    return restored


async def backup(config: OpsConfig, root: Path, out: TextIO) -> Path:
    """MongoDB, then the streams, into a new `root/<UTC time>/`; the directory made."""
    target = root / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target.mkdir(parents=True, exist_ok=False)
    for name in DATABASES:
        client = _client(config, name)
        try:
            count = dump_database(client[name], target / "mongodb" / name)
            print(f"mongodb {name}: {count} documents", file=out)
        except Exception as exc:
            where = ", ".join(
                f"{h}:{p}" for h, p in client.topology_description.server_descriptions()
            )
            raise OpsError(f"MongoDB at {where}: {exc}") from exc
        finally:
            client.close()
    nc = await connect(config)
    try:
        for stream in await stream_backup.stream_names(nc):
            size = await stream_backup.snapshot(nc, stream, target / "nats" / stream)
            print(f"nats {stream}: {size} bytes", file=out)
    finally:
        await nc.close()
    print(target, file=out)
    return target


async def restore(config: OpsConfig, source: Path, out: TextIO, replace: bool = False) -> None:
    """MongoDB first, then the streams (the services must not run: see the module's text)."""
    if not (source / "mongodb").is_dir() or not (source / "nats").is_dir():
        raise OpsError(f"{source} is not a backup (no mongodb/ and nats/ in it)")
    for directory in sorted((source / "mongodb").iterdir()):
        client = _client(config, directory.name)
        try:
            count = restore_database(client[directory.name], directory, replace)
            print(f"mongodb {directory.name}: {count} documents", file=out)
        finally:
            client.close()
    nc = await connect(config)
    try:
        for directory in sorted((source / "nats").iterdir()):
            state = await stream_backup.restore(nc, directory, replace)
            print(f"nats {directory.name}: {state.get('messages', 0)} messages", file=out)
    finally:
        await nc.close()


async def backup_command(root: Path, out: TextIO) -> int:
    """`sarafan backup`: where the stack is comes from the environment (OpsConfig)."""
    await backup(OpsConfig.from_env(), root, out)
    return 0


async def restore_command(source: Path, out: TextIO, replace: bool) -> int:
    await restore(OpsConfig.from_env(), source, out, replace)
    return 0
