"""The log's writer, whatever the backend: requests and learning rows, committed in small batches by
one background thread.

The request path only calls ``Writer.submit``, which puts a record on a bounded queue and returns.
The writer thread turns records into rows (parsing usage and answer text out of the raw response),
hands each batch to its backend's ``commit`` (as SQL both speak: ``finch.store.statements``), and tells its
listeners (metrics) what it wrote. SQLite (``finch.store.db``) and PostgreSQL
(``finch.store.postgres``) differ only in how they commit.
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from finch import dialects
from finch.conversation import Conversation
from finch.policy.decide import Attempt
from finch.pricing import PriceTable
from finch.sse import ResponseSummary, decode_body
from finch.store.rows import Row
from finch.vocabulary import DEFAULT_NAMESPACE, Route

log = logging.getLogger(__name__)

_QUEUE_SIZE = 10_000  # about a minute of heavy traffic; beyond that, logging must not hold requests
_BATCH = 200
_LINGER = 0.05  # seconds a row may wait before it is committed
_RETRY_S = (0.1, 5.0)  # the first and the longest wait before a batch is tried again on a backend away


class Unavailable(Exception):
    """The backend cannot be reached now: the batch is kept and tried again."""


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
    namespace: str = DEFAULT_NAMESPACE  # whose it is (finch.server.principals); UNRESOLVED: nobody's
    end_user: str = ""  # the end user it is for, as a digest ("" when it named none: the principal's own)


@dataclass(frozen=True)
class Summarized:
    """A request record with what the writer parsed out of its response."""

    record: RequestRecord
    summary: ResponseSummary
    cost: float  # dollars spent for a forward, dollars saved for a local answer


Listener = Callable[[RequestRecord, ResponseSummary, float], None]
Entry = Summarized | Row


class Writer(abc.ABC):
    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices or PriceTable()
        self.dropped = 0
        self._listeners: list[Listener] = []
        self._queue: queue.Queue[RequestRecord | Row | None] = queue.Queue(maxsize=_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        # False while the backend cannot be reached: the server answers nothing locally then, since an
        # answer the log cannot count must not be served.
        self.available = True

    @abc.abstractmethod
    def commit(self, entries: list[Entry]) -> None:
        """Write ``entries`` in one transaction, all or none (raises if none; ``Unavailable`` when the
        backend cannot be reached)."""

    @abc.abstractmethod
    def close_backend(self) -> None:
        """Release the backend's connections (after the thread has stopped)."""

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
        self.close_backend()

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
            self._write([r for r in batch if r is not None])
            for _ in batch:
                self._queue.task_done()
            if stop:
                return

    def _write(self, records: list[RequestRecord | Row]) -> None:
        entries = [self._summarize(r) if isinstance(r, RequestRecord) else r for r in records]
        wait = _RETRY_S[0]
        while True:  # a backend away keeps the batch (and the queue fills behind it) until it is back
            try:
                self.commit(entries)
                written, self.available = entries, True
                break
            except Unavailable as exc:
                if self.available:
                    log.warning("the log cannot be written (%s): nothing is answered locally until it can", exc)
                self.available = False
                time.sleep(wait)
                wait = min(2 * wait, _RETRY_S[1])
            except Exception:
                written = self._write_one_by_one(entries)
                break
        for entry in written:
            if isinstance(entry, Summarized):
                for listener in self._listeners:
                    try:
                        listener(entry.record, entry.summary, entry.cost)
                    except Exception:
                        log.exception("store listener failed")

    def _write_one_by_one(self, entries: list[Entry]) -> list[Entry]:
        """One bad record must cost only itself: the batch again, record by record."""
        written = []
        for entry in entries:
            try:
                self.commit([entry])
                written.append(entry)
            except Exception:
                log.exception("could not write a request record")
        return written

    def _summarize(self, record: RequestRecord) -> Summarized:
        if record.route == Route.LOCAL and record.local_usage is not None:
            # What the upstream would have charged: for a local answer, the cost column means "saved".
            summary = ResponseSummary(input_tokens=record.local_usage[0], output_tokens=record.local_usage[1])
            summary.text = record.local_answer
            return Summarized(record, summary, self.prices.cost(record.model or "", *record.local_usage))
        dialect = dialects.for_path(record.path)
        if not record.chunks or dialect is None:
            return Summarized(record, ResponseSummary(error_type=record.error_type), 0.0)
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
        return Summarized(record, summary, cost)
