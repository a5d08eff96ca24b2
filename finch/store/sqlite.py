"""The log in SQLite: finch's embedded store, one file (``FINCH_HOME/finch.db``) in WAL mode.

The writer is ``finch.store.db.Store`` (a thread that commits queued records in small batches); the
reads are ``finch.store.queries``, each on a read-only connection of its own. A reader waits for new
rows by watching the database's files: in WAL mode every commit appends to the ``-wal`` file, so a
look costs two stat calls, not a query.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from finch.pricing import PriceTable
from finch.store import queries
from finch.store.db import Store
from finch.store.log import Log

_POLL_S = 0.01  # how often a waiting reader looks at the files
_REREAD_S = 1.0  # and returns regardless this often, whatever their stats say


class SqliteLog(Log):
    def __init__(self, path: Path, prices: PriceTable | None = None, *, writer: bool = True) -> None:
        self.path = path
        self.writer = Store(path, prices) if writer else None  # opening it creates and migrates the file
        self.reader = SqliteReader(path)

    # -- reading ---------------------------------------------------------------------------------------

    def wait(self, stop: threading.Event, timeout: float) -> None:
        before, deadline = self._files(), time.monotonic() + min(timeout, _REREAD_S)
        while not stop.wait(_POLL_S) and time.monotonic() < deadline:
            if self._files() != before:
                return

    def _files(self) -> tuple[tuple[int, int] | None, ...]:
        return tuple(_stat(path) for path in (self.path, self.path.with_name(self.path.name + "-wal")))

    def forget(self, before: float | None = None, namespace: str | None = None) -> int:
        if not self.path.exists():
            return 0
        conn = sqlite3.connect(self.path)
        try:
            with conn:
                forgetting = queries.forget_statements(before, namespace)
                deleted = [conn.execute(sql, params).rowcount for sql, params in forgetting]
            conn.execute("VACUUM")  # the text is gone from the file, not just unlinked
            return deleted[0] + deleted[1]  # examples and local answers
        finally:
            conn.close()


class SqliteReader(queries.Reader):
    """Read-only connections to the file, one per read; no file yet reads as an empty log."""

    seq = "rowid"
    day_key = "CAST(ts / 86400 AS INTEGER)"
    day_label = f"date({day_key} * 86400, 'unixepoch')"

    def __init__(self, path: Path) -> None:
        self.path = path

    def bucket(self) -> str:
        return "CAST(ts / ? AS INTEGER) * ?"

    def read(self, queries: list[queries.Query], *, scope: str | None) -> list[list[dict[str, Any]]]:
        """``scope`` is the queries' own business here: one file, one user's machine."""
        if not self.path.exists():  # a home that has logged nothing yet
            return [[] for _ in queries]
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("BEGIN")  # one snapshot for every query
            found = [[dict(row) for row in conn.execute(sql, params)] for sql, params in queries]
            conn.execute("COMMIT")
            return found
        finally:
            conn.close()


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size
