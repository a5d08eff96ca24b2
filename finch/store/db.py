"""The SQLite log's writer (``finch.store.sqlite``): one file in WAL mode, written by the writer
thread of ``finch.store.writer``, and its read-only connections."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from finch.pricing import PriceTable
from finch.store.migrations import migrate
from finch.store.statements import statements
from finch.store.writer import Entry, Writer


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating 0600) and migrate the database; WAL keeps committed rows across a kill."""
    ensure_private_dir(path.parent)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable across process crashes
    conn.execute("PRAGMA foreign_keys=ON")
    migrate(conn)
    return conn


class Store(Writer):
    def __init__(self, path: Path, prices: PriceTable | None = None) -> None:
        super().__init__(prices)
        self.path = path
        self._conn = connect(path)

    def commit(self, entries: list[Entry]) -> None:
        self._conn.execute("BEGIN")
        try:
            for entry in entries:
                for sql, params in statements(entry):
                    self._conn.execute(sql, params)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def close_backend(self) -> None:
        self._conn.close()


def read_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()
