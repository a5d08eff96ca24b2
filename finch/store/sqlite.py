"""The log in SQLite: finch's embedded store, one file (``FINCH_HOME/finch.db``) in WAL mode.

The writer is ``finch.store.db.Store`` (a thread that commits queued records in small batches); the
reads are ``finch.store.queries``, each on a read-only connection of its own. A reader waits for new
rows by watching the database's files: in WAL mode every commit appends to the ``-wal`` file, so a
look costs two stat calls, not a query.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finch.conversation import Conversation
from finch.pricing import PriceTable
from finch.store import queries
from finch.store.db import Listener, RequestRecord, Store
from finch.store.log import STREAMS, Log, Position
from finch.store.rows import Row

_POLL_S = 0.01  # how often a waiting reader looks at the files
_REREAD_S = 1.0  # and returns regardless this often, whatever their stats say


class SqliteLog(Log):
    def __init__(self, path: Path, prices: PriceTable | None = None, *, writer: bool = True) -> None:
        self.path = path
        self._store = Store(path, prices) if writer else None  # opening it creates and migrates the file

    # -- writing -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._writer().start()

    def submit(self, record: RequestRecord | Row) -> None:
        self._writer().submit(record)

    @property
    def dropped(self) -> int:
        return self._store.dropped if self._store is not None else 0

    def add_listener(self, listener: Listener) -> None:
        self._writer().add_listener(listener)

    def flush(self, timeout: float = 10.0) -> None:
        if self._store is not None:
            self._store.flush(timeout)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def _writer(self) -> Store:
        if self._store is None:
            raise RuntimeError("this log was opened read-only")
        return self._store

    # -- the trainer's source ------------------------------------------------------------------------

    def events(self, stream: str, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        return queries.learning_events(self.path, stream, after, limit)

    def end(self) -> Position:
        if not self.path.exists():  # a home that has logged nothing yet
            return dict.fromkeys(STREAMS, 0)
        return queries.log_end(self.path)

    def wait(self, stop: threading.Event, timeout: float) -> None:
        before, deadline = self._files(), time.monotonic() + min(timeout, _REREAD_S)
        while not stop.wait(_POLL_S) and time.monotonic() < deadline:
            if self._files() != before:
                return

    def _files(self) -> tuple[tuple[int, int] | None, ...]:
        return tuple(_stat(path) for path in (self.path, self.path.with_name(self.path.name + "-wal")))

    def recent_texts(self, limit: int = 2000) -> Iterator[str]:
        return queries.recent_texts(self.path, limit)

    # -- lookups and reports ---------------------------------------------------------------------------

    def stored_local_answer(self, request_id: str) -> tuple[Conversation, str] | None:
        return queries.stored_local_answer(self.path, request_id)

    def request_is_logged(self, request_id: str) -> bool:
        return queries.request_is_logged(self.path, request_id)

    def totals(self) -> dict[str, Any]:
        return queries.totals(self.path)

    def by_day(self, days: int | None = 30) -> list[dict[str, Any]]:
        return queries.by_day(self.path, days)

    def by_reason(self) -> list[dict[str, Any]]:
        return queries.by_reason(self.path)

    def example_count(self) -> int:
        return queries.example_count(self.path)

    def learning_summary(self) -> dict[str, Any]:
        return queries.learning_summary(self.path)

    def dashboard(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"bucket_s": 60, "messages": [], "learning": [], "recent": [], "days": []}
        bucket_s = queries.bucket_seconds(self.path)
        return {
            "bucket_s": bucket_s,
            "messages": queries.messages_over_time(self.path, bucket_s),
            "learning": queries.learning_over_time(self.path, bucket_s),
            "recent": queries.recent_requests(self.path),
            "days": queries.by_day(self.path, None),
        }

    def forget(self, before: float | None = None) -> int:
        return queries.forget(self.path, before)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size
