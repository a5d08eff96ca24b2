"""What the writer commits, as SQL both backends speak (``?`` for parameters): a request's row, its
training example and local answer, the namespace it teaches, and the other rows (``finch.store.rows``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from finch.store.rows import Forget, ForgetLearningAfter, Learned, Verdict
from finch.vocabulary import UNRESOLVED, Route

if TYPE_CHECKING:
    from finch.store.writer import Entry, RequestRecord, Summarized

Statement = tuple[str, tuple[Any, ...]]


_REQUEST_COLUMNS = (
    "id, ts, method, path, model, stream, route, reason, status, latency_ms, ttfb_ms, attempts, input_tokens,"
    " output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cost_usd, saved_usd, error_type,"
    " upstream_request_id, p_router, p_validator, p_good, decision, namespace"
)
# A request id is written once: an import's content-hash id that raced another import's is skipped.
_INSERT_REQUEST = (
    f"INSERT INTO requests ({_REQUEST_COLUMNS}) VALUES ({', '.join('?' * 25)}) ON CONFLICT (id) DO NOTHING"
)


def statements(entry: Entry) -> Iterator[Statement]:
    if isinstance(entry, Learned):
        columns = ", ".join(entry.values)
        yield (
            f"INSERT INTO learning ({columns}) VALUES ({', '.join('?' * len(entry.values))})",
            tuple(entry.values.values()),
        )
    elif isinstance(entry, Verdict):
        verdict = (entry.request_id, entry.ts, int(entry.good), entry.namespace)
        yield "INSERT INTO feedback (request_id, ts, good, namespace) VALUES (?, ?, ?, ?)", verdict
    elif isinstance(entry, ForgetLearningAfter):
        yield (
            "DELETE FROM learning WHERE namespace = ?"
            " AND ((kind = 'claude' AND seq > ?) OR (kind = 'feedback' AND seq > ?))",
            (entry.namespace, entry.position.get("requests", 0), entry.position.get("feedback", 0)),
        )
    elif isinstance(entry, Forget):
        yield from _forget_statements(entry)
    else:  # a request, summarized by the writer
        yield from _request_statements(entry)


def _forget_statements(entry: Forget) -> Iterator[Statement]:
    """The namespace's stored conversations of the question (or all of them) go now; the row tells
    its trainer and the replicas to forget what they learned."""
    yield (
        "INSERT INTO forgets (namespace, conversation, ts) VALUES (?, ?, ?)",
        (
            entry.namespace,
            entry.conversation,
            entry.ts,
        ),
    )
    if entry.conversation is None:
        ids, params = "SELECT id FROM requests WHERE namespace = ?", (entry.namespace,)
    elif entry.request_ids:
        ids, params = ", ".join("?" * len(entry.request_ids)), entry.request_ids
    else:
        return
    yield f"DELETE FROM examples WHERE request_id IN ({ids})", params
    yield f"DELETE FROM local_answers WHERE request_id IN ({ids})", params
    yield f"UPDATE learning SET attempt = NULL WHERE request_id IN ({ids})", params
    yield f"UPDATE requests SET decision = NULL WHERE id IN ({ids})", params


def _request_statements(entry: Summarized) -> Iterator[Statement]:
    record, summary = entry.record, entry.summary
    yield _INSERT_REQUEST, _request_row(entry)
    if record.conversation is not None and record.namespace != UNRESOLVED:  # a namespace with something to learn
        namespace = (record.namespace, record.ts)
        yield "INSERT INTO namespaces (name, first_ts) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", namespace
    if record.conversation is not None and summary.text and record.status == 200:
        yield (
            "INSERT INTO examples (request_id, ts, model, conversation, answer, max_tokens, end_user)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING",
            (
                record.id,
                record.ts,
                record.model,
                record.conversation.to_json(),
                summary.text,
                record.max_tokens,
                record.end_user,
            ),
        )
    if record.route == Route.LOCAL and record.conversation is not None and record.local_answer is not None:
        yield (
            "INSERT INTO local_answers (request_id, ts, conversation, answer) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (request_id) DO NOTHING",
            (record.id, record.ts, record.conversation.to_json(), record.local_answer),
        )


def _request_row(entry: Summarized) -> tuple[Any, ...]:
    record, summary, cost = entry.record, entry.summary, entry.cost
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
        record.namespace,
    )


def _decision_json(record: RequestRecord) -> str | None:
    """A would-be-local answer's attempt (served, or withheld for an audit), for the trainer to count
    (``queries.learning_events``)."""
    attempt = record.attempt
    if attempt is None or attempt.choice is None or record.local_answer is None:
        return None
    return json.dumps(attempt.to_json(), ensure_ascii=False)
