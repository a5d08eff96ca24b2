"""Named, append-only schema migrations: ``migrations/NNNN_name.sql``, applied once each, in order."""

from __future__ import annotations

import sqlite3
import time
from importlib import resources


def pending_and_applied(conn: sqlite3.Connection) -> tuple[list[str], set[str]]:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    applied = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    names = sorted(
        p.name for p in resources.files("finch.store").joinpath("migrations").iterdir() if p.name.endswith(".sql")
    )
    return [n for n in names if n not in applied], applied


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet applied; each in its own transaction. Returns the names applied."""
    pending, _ = pending_and_applied(conn)
    for name in pending:
        sql = resources.files("finch.store").joinpath("migrations", name).read_text()
        # executescript commits first; wrap explicitly so a failing migration leaves nothing half-done.
        try:
            conn.executescript(
                f"BEGIN;\n{sql}\nINSERT INTO schema_migrations VALUES ('{name}', {time.time()});\nCOMMIT;"
            )
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return pending
