"""The trainers' leases: one trainer at a time learns a namespace, and a killed one's leases pass on.

Embedded, a namespace's lease is an exclusive lock on its ``models/trainer.lock``; in the team tier
it is a PostgreSQL session advisory lock, all of one trainer's on one connection of its own. Either
way the operating system or the database releases them when their holder dies, however it dies, and
the next trainer that asks takes them.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from typing import IO, Any

from finch.config import Settings
from finch.learning.home import namespace_settings
from finch.store.db import ensure_private_dir
from finch.vocabulary import DEFAULT_NAMESPACE

# The first key of the team tier's trainer leases ("finc"); the second is the namespace's hash.
_LEASE_CLASS = 0x66696E63


class Leases:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._held: set[str] = set()
        self._files: dict[str, IO[str]] = {}
        self._conn: Any = None
        if settings.database_url:
            import psycopg

            self._conn = psycopg.connect(settings.database_url, autocommit=True)

    def take(self, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """Take ``namespace``'s lease if it is free; whether this process holds it."""
        if namespace in self._held:
            return True
        if self._conn is not None:
            query = "SELECT pg_try_advisory_lock(%s, hashtext(%s))"
            taken = bool(self._conn.execute(query, (_LEASE_CLASS, namespace)).fetchone()[0])
        else:
            taken = self._lock_file(namespace)
        if taken:
            self._held.add(namespace)
        return taken

    def _lock_file(self, namespace: str) -> bool:
        models = namespace_settings(self.settings, namespace).home / "models"
        ensure_private_dir(models)
        lock = self._files.get(namespace) or (models / "trainer.lock").open("a")
        self._files[namespace] = lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        """Give every lease back."""
        for lock in self._files.values():
            lock.close()
        if self._conn is not None:
            self._conn.close()  # the database frees the connection's locks
        self._files, self._held, self._conn = {}, set(), None


@contextlib.contextmanager
def leases(settings: Settings) -> Iterator[Leases]:
    held = Leases(settings)
    try:
        yield held
    finally:
        held.close()
