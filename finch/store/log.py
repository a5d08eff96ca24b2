"""The storage seam: everything the server and the trainer share through the store, behind one
interface.

    write     submit(record)                  a request, a learning row, a verdict; never blocks
    read      events(stream, after, limit,    the trainer's source, in the order it was written:
                     namespace)               one namespace's rows (or every namespace's)
              end(namespace), backlog(...)    how far each stream is written; what is left to read
              namespaces()                    the namespaces with something to learn
              wait(stop, timeout)             until something may have been written
    show      totals(), by_day(), ...         what `finch stats` and the dashboard read

A reader's place in the log is a ``Position``: for each stream (``STREAMS``), the ``seq`` of the
last row it read. Sequence numbers are the backend's own (SQLite's rowids, a database's sequence);
callers only compare and store them. SQLite is the embedded implementation (``finch.store.sqlite``),
PostgreSQL the team one (``finch.store.postgres``); ``tests/test_log.py`` is the conformance suite
both pass. ``open_log`` picks one from the settings.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from finch.conversation import Conversation, question_key
from finch.store import queries, series
from finch.store.rows import Forget
from finch.text import normalise
from finch.vocabulary import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from finch.config import Settings
    from finch.pricing import PriceTable
    from finch.store.rows import Row
    from finch.store.writer import Listener, RequestRecord, Writer

# The streams the trainer learns from: Claude's answers and local answers (requests), and users'
# verdicts on local answers (feedback).
STREAMS = ("requests", "feedback", "forgets")
Position = dict[str, int]


class Log(abc.ABC):
    """The request log, as the server writes it and the trainer and people read it."""

    # -- writing: queued, committed off the caller's thread, by the backend's writer -----------------

    writer: Writer | None  # None: opened read-only

    def start(self) -> None:
        """Start the writer (a reader that never writes need not)."""
        self._writing().start()

    def submit(self, record: RequestRecord | Row) -> None:
        """Queue a record; never blocks. A record the writer is too far behind to take is dropped
        and counted (``dropped``)."""
        self._writing().submit(record)

    @property
    def dropped(self) -> int:
        return self.writer.dropped if self.writer is not None else 0

    @property
    def available(self) -> bool:
        """Whether the log can be written now. While it cannot, nothing is answered locally: an
        answer the log cannot count must not be served."""
        return self.writer.available if self.writer is not None else True

    def add_listener(self, listener: Listener) -> None:
        """Called with each request once it is committed (metrics)."""
        self._writing().add_listener(listener)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every record submitted so far is committed."""
        if self.writer is not None:
            self.writer.flush(timeout)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _writing(self) -> Writer:
        if self.writer is None:
            raise RuntimeError("this log was opened read-only")
        return self.writer

    # -- reading: the same SQL on every backend, through its reader ---------------------------------

    reader: queries.Reader

    def events(
        self, stream: str, after: int, limit: int, namespace: str | None = DEFAULT_NAMESPACE
    ) -> tuple[list[dict[str, Any]], int]:
        """The rows of ``stream`` in ``namespace`` (None: every namespace's) written after ``after``
        that there is something to learn from, oldest first, at most ``limit``; and the seq read up
        to (past rows with nothing to learn).

        A request row: seq, request_id, route, reason, decision (the logged attempt, JSON),
        conversation, answer (Claude's), max_tokens, end_user and namespace. A feedback row: seq,
        request_id, good, the conversation and answer it judges, and namespace. A forgets row: seq,
        the conversation to forget (None: everything) and namespace."""
        return queries.learning_events(self.reader, stream, after, limit, namespace)

    def end(self, namespace: str | None = DEFAULT_NAMESPACE) -> Position:
        """How far each stream has been written, in ``namespace`` (None: in all)."""
        return queries.log_end(self.reader, namespace)

    def backlog(self, position: Position, namespace: str = DEFAULT_NAMESPACE) -> int:
        """Rows of ``namespace`` written past ``position``: the trainer's backlog, counted over every
        request."""
        return queries.backlog(self.reader, position, namespace)

    @abc.abstractmethod
    def wait(self, stop: threading.Event, timeout: float) -> None:
        """Return when something may have been written, when ``stop`` is set, or after ``timeout``."""

    def namespaces(self) -> list[str]:
        """The namespaces with something to learn, oldest first."""
        return queries.namespaces(self.reader)

    def recent_texts(self, limit: int = 2000, namespace: str = DEFAULT_NAMESPACE) -> Iterator[str]:
        """The turns and Claude's answers of the newest training examples (to build a tokenizer)."""
        return queries.recent_texts(self.reader, namespace, limit)

    # -- what the server looks up ---------------------------------------------------------------------

    def stored_local_answer(
        self, request_id: str, namespace: str = DEFAULT_NAMESPACE
    ) -> tuple[Conversation, str] | None:
        return queries.stored_local_answer(self.reader, request_id, namespace)

    def request_is_logged(self, request_id: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        return queries.request_is_logged(self.reader, request_id, namespace)

    # -- what people read -----------------------------------------------------------------------------

    # Each in one namespace, or (None) in all of them.

    def totals(self, namespace: str | None = None) -> dict[str, Any]:
        return queries.totals(self.reader, namespace)

    def by_day(self, days: int | None = 30, namespace: str | None = None) -> list[dict[str, Any]]:
        """Per UTC day, newest first; every day when ``days`` is None."""
        return queries.by_day(self.reader, days, namespace)

    def by_reason(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return queries.by_reason(self.reader, namespace)

    def example_count(self, namespace: str | None = None) -> int:
        """Conversations kept with their answer (Claude's, or finch's own when served locally)."""
        return queries.example_count(self.reader, namespace)

    def first_local(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Per namespace: its requests, and how many it took to its first local answer."""
        return queries.first_local(self.reader, namespace)

    def forget_question(self, namespace: str, conversation: Conversation | None) -> int:
        """Forget one question of ``namespace`` (its stored conversations, the same after the judge's
        normalisation, at once; what was learned of it, by the trainer), or everything the namespace
        taught (None). Returns how many stored conversations go now (all of them, for None: -1)."""
        if conversation is None:
            self.submit(Forget(namespace, None))
            return -1
        key = question_key(conversation)
        stored = queries.stored_with_conversation(self.reader, namespace)
        ids = tuple(sorted({row["request_id"] for row in stored if normalise(row["conversation"]) == key}))
        self.submit(Forget(namespace, conversation.to_json(), ids))
        return len(ids)

    def learning_summary(self, namespace: str | None = None) -> dict[str, Any]:
        """What the trainer has learned, and what the audits say of the answers finch serves."""
        return queries.learning_summary(self.reader, namespace)

    def dashboard(self, namespace: str | None = None) -> dict[str, Any]:
        """The dashboard's series: bucket_s, messages and learning per bucket, recent requests, every
        day (``finch.server.dashboard`` shapes them)."""
        return series.dashboard(self.reader, namespace)

    @abc.abstractmethod
    def forget(self, before: float | None = None, namespace: str | None = None) -> int:
        """Delete stored conversations, all or those older than ``before`` (unix seconds), of every
        namespace or of ``namespace``; the numbers stay. What was learned of them stays too
        (``forget_question`` forgets that). Returns how many stored texts were deleted (a conversation kept with its
        answer, and a local answer kept for feedback, count one each)."""


def open_log(settings: Settings, prices: PriceTable | None = None, *, writer: bool = True) -> Log:
    """finch's log, as the settings place it: PostgreSQL when ``database_url`` is set (the team tier),
    else SQLite in the home (``finch.db``, embedded). ``writer=False``: read only, for a command that
    only shows what is there (and creates nothing)."""
    if settings.database_url:
        from finch.store.postgres import PostgresLog

        return PostgresLog(settings.database_url, prices, writer=writer)
    from finch.store.sqlite import SqliteLog

    return SqliteLog(settings.home / "finch.db", prices, writer=writer)
