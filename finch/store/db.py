"""The SQLite log's writer (``finch.store.sqlite``): requests and training examples, in WAL mode,
written by one background thread.

The request path only calls ``Store.submit``, which puts a record on a bounded queue and returns.
The writer thread turns records into rows (parsing usage and answer text out of the raw response),
commits them in small batches and tells its listeners (metrics, later the learner) what it wrote.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finch import dialects
from finch.conversation import Conversation
from finch.policy.decide import Attempt
from finch.pricing import PriceTable
from finch.sse import ResponseSummary, decode_body
from finch.store.migrations import migrate
from finch.store.rows import ForgetLearningAfter, Learned, Row, Verdict
from finch.vocabulary import Route

log = logging.getLogger(__name__)

_QUEUE_SIZE = 10_000  # about a minute of heavy traffic; beyond that, logging must not hold requests
_BATCH = 200
_LINGER = 0.05  # seconds a row may wait before it is committed


@dataclass
class RequestRecord:
    """What the request path knows about one request; the writer derives the rest."""

    id: str
    ts: float
    method: str
    path: str
    route: str
    reason: str
    status: int
    model: str | None = None
    stream: bool = False
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    attempts: int = 0
    error_type: str | None = None
    upstream_request_id: str | None = None
    is_sse: bool = False
    content_encoding: str | None = None
    chunks: list[bytes] = field(default_factory=list, repr=False)  # the response as relayed
    conversation: Conversation | None = field(default=None, repr=False)  # set when eligible
    max_tokens: int | None = None  # the request's, when eligible
    attempt: Attempt | None = field(default=None, repr=False)  # the local attempt, when the models were asked
    local_answer: str | None = field(default=None, repr=False)  # served locally, or the audited attempt
    local_usage: tuple[int, int] | None = None  # (input, output) tokens of a local answer, estimated


Listener = Callable[[RequestRecord, ResponseSummary, float], None]


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


class Store:
    def __init__(self, path: Path, prices: PriceTable | None = None) -> None:
        self.path = path
        self.prices = prices or PriceTable()
        self.dropped = 0
        self._listeners: list[Listener] = []
        self._queue: queue.Queue[RequestRecord | Row | None] = queue.Queue(maxsize=_QUEUE_SIZE)
        self._conn = connect(path)
        self._thread: threading.Thread | None = None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="finch-store-writer", daemon=True)
            self._thread.start()

    def submit(self, record: RequestRecord | Row) -> None:
        """Never blocks: when the writer is far behind, the record is dropped and counted."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every submitted record is committed (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        self._conn.close()

    # -- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Linger briefly so a busy server commits many rows at once and this thread wakes
            # (and takes the GIL from the event loop) far less often.
            deadline = time.monotonic() + _LINGER
            while len(batch) < _BATCH and batch[-1] is not None:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            stop = None in batch
            records = [r for r in batch if r is not None]
            try:
                self._write(records)
            except Exception:  # one bad record must cost only itself: write the batch one by one
                for record in records:
                    try:
                        self._write([record])
                    except Exception:
                        log.exception("could not write a request record")
            for _ in batch:
                self._queue.task_done()
            if stop:
                return

    def _write(self, records: list[RequestRecord | Row]) -> None:
        written = []
        self._conn.execute("BEGIN")
        try:
            for record in records:
                if not isinstance(record, RequestRecord):
                    self._conn.execute(*_statement(record))
                    continue
                summary, cost = self._summarize(record)
                self._conn.execute(_INSERT_REQUEST, _request_row(record, summary, cost))
                if record.conversation is not None and summary.text and record.status == 200:
                    self._conn.execute(
                        "INSERT INTO examples (request_id, ts, model, conversation, answer, max_tokens)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            record.id,
                            record.ts,
                            record.model,
                            record.conversation.to_json(),
                            summary.text,
                            record.max_tokens,
                        ),
                    )
                if record.route == Route.LOCAL and record.conversation is not None and record.local_answer is not None:
                    self._conn.execute(
                        "INSERT INTO local_answers VALUES (?, ?, ?, ?)",
                        (record.id, record.ts, record.conversation.to_json(), record.local_answer),
                    )
                written.append((record, summary, cost))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        for record, summary, cost in written:
            for listener in self._listeners:
                try:
                    listener(record, summary, cost)
                except Exception:
                    log.exception("store listener failed")

    def _summarize(self, record: RequestRecord) -> tuple[ResponseSummary, float]:
        if record.route == Route.LOCAL and record.local_usage is not None:
            # What the upstream would have charged: for a local answer, the cost column means "saved".
            summary = ResponseSummary(input_tokens=record.local_usage[0], output_tokens=record.local_usage[1])
            summary.text = record.local_answer
            return summary, self.prices.cost(record.model or "", *record.local_usage)
        dialect = dialects.for_path(record.path)
        if not record.chunks or dialect is None:
            return ResponseSummary(error_type=record.error_type), 0.0
        body = decode_body(record.chunks, record.content_encoding)
        summary = dialect.summarize(body, record.is_sse)
        summary.error_type = summary.error_type or record.error_type
        cost = 0.0
        if record.route == Route.FORWARD and record.model:
            cost = self.prices.cost(
                record.model,
                summary.input_tokens,
                summary.output_tokens,
                summary.cache_creation_input_tokens,
                summary.cache_read_input_tokens,
            )
        return summary, cost


_INSERT_REQUEST = (
    "INSERT OR REPLACE INTO requests (id, ts, method, path, model, stream, route, reason, status, latency_ms,"
    " ttfb_ms, attempts, input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens,"
    " cost_usd, saved_usd, error_type, upstream_request_id, p_router, p_validator, p_good, decision)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _request_row(record: RequestRecord, summary: ResponseSummary, cost: float) -> tuple[Any, ...]:
    """``cost`` is dollars spent for a forward and dollars saved for a local answer."""
    attempt = record.attempt
    chosen = attempt.choice if attempt is not None else None
    return (
        record.id,
        record.ts,
        record.method,
        record.path,
        record.model,
        int(record.stream),
        record.route,
        record.reason,
        record.status,
        record.latency_ms,
        record.ttfb_ms,
        record.attempts,
        summary.input_tokens,
        summary.output_tokens,
        summary.cache_creation_input_tokens,
        summary.cache_read_input_tokens,
        cost if record.route != Route.LOCAL else 0.0,
        cost if record.route == Route.LOCAL else 0.0,
        summary.error_type,
        record.upstream_request_id,
        attempt.p_router if attempt is not None else None,
        chosen.p_validator if chosen is not None else None,
        chosen.p_good if chosen is not None else None,
        _decision_json(record),
    )


def _decision_json(record: RequestRecord) -> str | None:
    """A would-be-local answer's attempt (served, or withheld for an audit), for the trainer to count
    (``queries.learning_events``)."""
    attempt = record.attempt
    if attempt is None or attempt.choice is None or record.local_answer is None:
        return None
    return json.dumps(attempt.to_json(), ensure_ascii=False)


def read_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


def _statement(row: Row) -> tuple[str, tuple[Any, ...]]:
    """A row other than a request, as SQLite's statement and parameters."""
    if isinstance(row, Learned):
        columns = ", ".join(row.values)
        return f"INSERT INTO learning ({columns}) VALUES ({', '.join('?' * len(row.values))})", tuple(
            row.values.values()
        )
    if isinstance(row, Verdict):
        return "INSERT INTO feedback VALUES (?, ?, ?)", (row.request_id, row.ts, int(row.good))
    if isinstance(row, ForgetLearningAfter):
        return (
            "DELETE FROM learning WHERE (kind = 'claude' AND seq > ?) OR (kind = 'feedback' AND seq > ?)",
            (row.position.get("requests", 0), row.position.get("feedback", 0)),
        )
    raise TypeError(f"not a row the log writes: {row!r}")
