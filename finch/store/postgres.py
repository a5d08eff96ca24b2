"""The log in PostgreSQL: finch's team store (``database_url = "postgresql://..."``), shared by every
replica and trainer that names the same database.

- **Writing.** Each process commits its own queued records in small batches (``finch.store.writer``).
  Every write transaction first takes one transaction-level advisory lock, so rows get their ``seq``
  in the order transactions commit: a reader that has seen seq N has seen every row before it, and
  a trainer's cursor never steps over a row that committed late.
- **Reading.** Each read is one REPEATABLE READ snapshot from a small connection pool (psycopg 3).
- **Row-level security.** Every table is held to the namespace its transaction names
  (``finch.namespace``, set per transaction; ``*`` for every one): a read names the namespace it is
  for, so a query that forgot its own WHERE still sees nothing of another namespace, and a
  transaction that names none sees no rows at all. The security is forced, so it binds the tables'
  owner too; only a superuser or a role with BYPASSRLS passes it (migrations_postgres/0004).
- **Waking.** A write transaction sends ``NOTIFY finch_log`` on commit; a waiting reader LISTENs on a
  connection of its own, and returns at least once a second whatever it hears (a lost connection
  costs a second, not a wake-up).

The schema is ``migrations_postgres/NNNN_name.sql``, applied once each under an advisory lock, so
replicas starting together migrate once.
"""

from __future__ import annotations

import logging
import threading
import time
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from finch.pricing import PriceTable
from finch.store import queries
from finch.store.log import Log
from finch.store.statements import statements
from finch.store.writer import Entry, Unavailable, Writer

log = logging.getLogger(__name__)

_CHANNEL = "finch_log"
# Advisory lock keys (64-bit): one for every write to the log, one for migrating the schema.
_WRITE_LOCK = 0x66696E63_68000001
_MIGRATE_LOCK = 0x66696E63_68000002
_REREAD_S = 1.0  # a waiting reader returns this often, whatever it heard
_CONNECT_TIMEOUT_S = 5.0
_EVERY_NAMESPACE = "*"  # finch.namespace for a transaction of every namespace's rows (a writer's batch)
_SCOPE = "SELECT set_config('finch.namespace', %s, true)"  # for this transaction only


def _pg(sql: str) -> str:
    """The shared statements' ? placeholders, as psycopg's."""
    return sql.replace("?", "%s")


class PostgresLog(Log):
    def __init__(self, url: str, prices: PriceTable | None = None, *, writer: bool = True) -> None:
        self.url = url
        self._pool = ConnectionPool(
            url, min_size=1, max_size=4, timeout=_CONNECT_TIMEOUT_S, open=True, name="finch-log",
            kwargs={"connect_timeout": int(_CONNECT_TIMEOUT_S)},
        )  # fmt: skip
        if writer:
            migrate(self._pool)
        self.writer = PostgresWriter(self._pool, prices) if writer else None
        self.reader = PostgresReader(self._pool)
        self._listener: psycopg.Connection | None = None
        self._reachable = True

    @property
    def available(self) -> bool:
        """The writer's last commit went through, and the listening connection (when one waits) is up:
        a database that shuts down closes it, which a waiting reader sees within a tenth of a second."""
        return super().available and self._reachable

    def close(self) -> None:
        super().close()
        if self._listener is not None:
            self._listener.close()
        self._pool.close()

    # -- reading ---------------------------------------------------------------------------------------

    def wait(self, stop: threading.Event, timeout: float) -> None:
        deadline = time.monotonic() + min(timeout, _REREAD_S)
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            try:
                listener = self._listening()
                heard = any(True for _ in listener.notifies(timeout=min(left, 0.1), stop_after=1))
                self._reachable = True
                if heard:
                    return
            except psycopg.Error:  # the database is away: look again after a while
                self._reachable = False
                self._drop_listener()
                stop.wait(min(left, 0.1))

    def _listening(self) -> psycopg.Connection:
        if self._listener is None or self._listener.closed:
            self._listener = psycopg.connect(self.url, autocommit=True, connect_timeout=int(_CONNECT_TIMEOUT_S))
            self._listener.execute(f"LISTEN {_CHANNEL}")
        return self._listener

    def _drop_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._listener = None

    def forget(self, before: float | None = None, namespace: str | None = None) -> int:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(_SCOPE, (_EVERY_NAMESPACE,))
            forgetting = queries.forget_statements(before, namespace)
            deleted = [conn.execute(_pg(sql), params).rowcount for sql, params in forgetting]
        # VACUUM FULL rewrites the tables, so the forgotten text is gone from their files, not just
        # unlinked (the write-ahead log keeps it until PostgreSQL recycles its segments).
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("VACUUM FULL examples, local_answers, learning, requests")
        return deleted[0] + deleted[1]  # examples and local answers


class PostgresWriter(Writer):
    def __init__(self, pool: ConnectionPool, prices: PriceTable | None = None) -> None:
        super().__init__(prices)
        self._pool = pool

    def commit(self, entries: list[Entry]) -> None:
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(_SCOPE, (_EVERY_NAMESPACE,))  # a batch holds rows of many namespaces
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
                with conn.cursor() as cursor:
                    for entry in entries:
                        for sql, params in statements(entry):
                            cursor.execute(_pg(sql), params)
                conn.execute(f"NOTIFY {_CHANNEL}")
        except (psycopg.OperationalError, PoolTimeout) as exc:  # the database is away, not the rows wrong
            raise Unavailable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc

    def close_backend(self) -> None:
        """The pool is the log's, closed with it."""


class PostgresReader(queries.Reader):
    seq = "seq"
    day_key = "floor(ts / 86400)"
    day_label = f"to_char(to_timestamp({day_key} * 86400) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def bucket(self) -> str:
        return "CAST(floor(ts / ?) AS bigint) * ?"

    def read(self, queries: list[queries.Query], *, scope: str | None) -> list[list[dict[str, Any]]]:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(_SCOPE, (_EVERY_NAMESPACE if scope is None else scope,))
            with conn.cursor(row_factory=dict_row) as cursor:
                return [cursor.execute(_pg(sql), params).fetchall() for sql, params in queries]


def migrate(pool: ConnectionPool) -> list[str]:
    """Apply every schema file not yet applied, each in its own transaction; one process at a time."""
    folder = resources.files("finch.store").joinpath("migrations_postgres")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    applied_now = []
    with pool.connection() as conn:
        for name in names:
            with conn.transaction():
                conn.execute(_SCOPE, (_EVERY_NAMESPACE,))  # a migration may move rows of every namespace
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations"
                    " (name text PRIMARY KEY, applied_at double precision NOT NULL)"
                )
                if conn.execute("SELECT 1 FROM schema_migrations WHERE name = %s", (name,)).fetchone():
                    continue
                conn.execute(folder.joinpath(name).read_text())
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (name, time.time()))
                applied_now.append(name)
    return applied_now
