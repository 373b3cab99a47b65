"""Writes a test's code under test sends one database, counted by PyMongo's command monitoring:
round trips and the documents they ask the server to write (an insert's documents, an update's
or a delete's statements, a findAndModify's one). Counts, not times."""

from __future__ import annotations

import threading
from collections import Counter

from pymongo import monitoring

#: Where a write command lists its statements.
STATEMENTS = {"insert": "documents", "update": "updates", "delete": "deletes"}


class WriteCounter(monitoring.CommandListener):
    """Counts while `on`; registered for every client made after `start` (PyMongo's listeners
    are process-wide and cannot be removed: an idle counter only looks at the database name)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.on = False
        self.round_trips: Counter[tuple[str, str]] = Counter()
        self.documents: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def start(cls, database: str) -> WriteCounter:
        counter = cls(database)
        monitoring.register(counter)
        return counter

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if not self.on or event.database_name != self.database:
            return
        if name not in (*STATEMENTS, "findAndModify"):
            return
        key = (name, str(event.command.get(name)))
        field = STATEMENTS.get(name)
        written = len(event.command.get(field) or ()) if field else 1
        with self._lock:
            self.round_trips[key] += 1
            self.documents[key] += written

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def changed(self) -> int:
        """Documents written by updates, deletes and findAndModify (inserts apart)."""
        return sum(n for (name, _), n in self.documents.items() if name != "insert")

    def written(self, command: str, collection: str) -> int:
        return self.documents[(command, collection)]
