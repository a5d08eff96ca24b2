"""The questions asked of the request log, in SQL both backends speak: totals and per-day summaries
for `finch stats`, the dashboard's series, and the trainer's source of learning events.

Each takes a ``Reader``: a backend's read-only access, with the few expressions that differ between
SQLite and PostgreSQL (the order of a stream's rows, a day, a time bucket)."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

from finch.conversation import Conversation

Query = tuple[str, tuple[Any, ...]]


class Reader(abc.ABC):
    seq: str  # the column that orders a stream's rows (SQLite's rowid, PostgreSQL's seq)
    day_key: str  # a row's UTC day, as a number to group by
    day_label: str  # that day as YYYY-MM-DD, built on day_key

    @abc.abstractmethod
    def read(self, queries: list[Query], *, scope: str | None) -> list[list[dict[str, Any]]]:
        """Each query's rows, all read from one snapshot of the log ([] each where there is no log yet).
        ``scope``: the namespace the queries read (None: every namespace). Each query names it too;
        where the backend can, it also holds the rows to it (PostgreSQL's row-level security)."""

    @abc.abstractmethod
    def bucket(self) -> str:
        """``ts`` cut into buckets of ? seconds, as the bucket's start (two parameters: the width twice)."""

    def rows(self, sql: str, params: tuple[Any, ...] = (), *, scope: str | None) -> list[dict[str, Any]]:
        return self.read([(sql, params)], scope=scope)[0]


def _count(condition: str) -> str:
    return f"COALESCE(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END), 0)"


FORWARDED, LOCAL = _count("route = 'forward'"), _count("route = 'local'")
_LEARNED, AUDITS_BAD = _count("kind = 'claude'"), _count("audit = 1 AND audit_good = 0")
_SUMMARY_COLUMNS = f"""
    COUNT(*) AS requests,
    {FORWARDED} AS forwarded,
    {LOCAL} AS local,
    {_count("route = 'reject'")} AS rejected,
    {_count("status >= 400")} AS errors,
    COALESCE(SUM(input_tokens), 0) AS input_tokens,
    COALESCE(SUM(output_tokens), 0) AS output_tokens,
    COALESCE(SUM(cost_usd), 0.0) AS cost_usd,
    COALESCE(SUM(saved_usd), 0.0) AS saved_usd
"""


# What people read takes ``namespace``: one namespace's rows, or (None) every namespace's.
def only(namespace: str | None, column: str = "namespace", word: str = "WHERE") -> Query:
    return ("", ()) if namespace is None else (f" {word} {column} = ?", (namespace,))


def totals(r: Reader, namespace: str | None = None) -> dict[str, Any]:
    where, params = only(namespace)
    found = r.rows(f"SELECT {_SUMMARY_COLUMNS} FROM requests{where}", params, scope=namespace)
    return found[0] if found else _empty()


def by_day(r: Reader, days: int | None = 30, namespace: str | None = None) -> list[dict[str, Any]]:
    """Per UTC day, newest first; every day when ``days`` is None. (Grouped on whole days of unix
    time, which costs a third of grouping on a date on a large log.)"""
    where, params = only(namespace)
    limit = "" if days is None else " LIMIT ?"
    return r.rows(
        f"SELECT {r.day_label} AS day, {_SUMMARY_COLUMNS} FROM requests{where}"
        f" GROUP BY {r.day_key} ORDER BY day DESC{limit}",
        params if days is None else (*params, days),
        scope=namespace,
    )


def by_reason(r: Reader, namespace: str | None = None) -> list[dict[str, Any]]:
    where, params = only(namespace)
    return r.rows(
        f"SELECT route, reason, COUNT(*) AS requests FROM requests{where}"
        " GROUP BY route, reason ORDER BY requests DESC",
        params,
        scope=namespace,
    )


def example_count(r: Reader, namespace: str | None = None) -> int:
    where, params = only(namespace, "q.namespace")
    found = r.rows(
        f"SELECT COUNT(*) AS n FROM examples e JOIN requests q ON q.id = e.request_id{where}", params, scope=namespace
    )
    return int(found[0]["n"]) if found else 0


def first_local(r: Reader, namespace: str | None = None) -> list[dict[str, Any]]:
    """Per namespace (one, or None: every one): its requests, and how many of them it took up to and
    with its first local answer (None while it has served none). Counted on the namespace index."""
    where, params = only(namespace, word="AND")
    rows = r.rows(
        f"SELECT n.namespace, (SELECT COUNT(*) FROM requests WHERE namespace = n.namespace) AS requests,"
        f" (SELECT COUNT(*) FROM requests WHERE namespace = n.namespace AND {r.seq} <= n.first) AS until_first_local"
        f" FROM (SELECT namespace, MIN(CASE WHEN route = 'local' THEN {r.seq} END) AS first FROM requests"
        f" WHERE namespace <> ''{where} GROUP BY namespace) n ORDER BY n.namespace",
        params,
        scope=namespace,
    )
    return [{**row, "until_first_local": row["until_first_local"] or None} for row in rows]


def _empty() -> dict[str, Any]:
    keys = ("requests", "forwarded", "local", "rejected", "errors", "input_tokens", "output_tokens")
    return {**dict.fromkeys(keys, 0), "cost_usd": 0.0, "saved_usd": 0.0}


def learning_summary(r: Reader, namespace: str | None = None) -> dict[str, Any]:
    """What the trainer has learned and what the audits say of the answers finch serves."""
    from finch.policy.bound import audit_interval

    where, params = only(namespace)
    found = r.rows(
        f"SELECT {_LEARNED} AS learned, COALESCE(SUM(audit), 0) AS audits,"
        f" {AUDITS_BAD} AS audits_bad,"
        f" (SELECT threshold FROM learning{where} ORDER BY id DESC LIMIT 1) AS threshold FROM learning{where}",
        params * 2,
        scope=namespace,
    )
    row = found[0] if found else {"learned": 0, "audits": 0, "audits_bad": 0, "threshold": None}
    low, high = audit_interval(row["audits_bad"], row["audits"])
    estimate = row["audits_bad"] / row["audits"] if row["audits"] else None
    return {**row, "bad_local_estimate": estimate, "bad_local_interval": [low, high]}


def stored_local_answer(r: Reader, request_id: str, namespace: str) -> tuple[Conversation, str] | None:
    """The conversation and the answer finch served locally for a request of ``namespace``, if it is
    in the log."""
    rows = r.rows(
        "SELECT a.conversation, a.answer FROM local_answers a JOIN requests q ON q.id = a.request_id"
        " WHERE a.request_id = ? AND q.namespace = ?",
        (request_id, namespace),
        scope=namespace,
    )
    return (Conversation.from_json(rows[0]["conversation"]), rows[0]["answer"]) if rows else None


def request_is_logged(r: Reader, request_id: str, namespace: str) -> bool:
    return bool(
        r.rows(
            "SELECT 1 AS found FROM requests WHERE id = ? AND namespace = ?", (request_id, namespace), scope=namespace
        )
    )


def recent_texts(r: Reader, namespace: str, limit: int = 2000) -> Iterator[str]:
    """The turns and answers of the most recent training examples of ``namespace``."""
    rows = r.rows(
        "SELECT e.conversation, e.answer FROM examples e JOIN requests q ON q.id = e.request_id"
        " WHERE q.namespace = ? ORDER BY e.ts DESC LIMIT ?",
        (namespace, limit),
        scope=namespace,
    )
    for row in rows:
        yield from (t for _, t in Conversation.from_json(row["conversation"]).turns)
        yield row["answer"]


def namespaces(r: Reader) -> list[str]:
    """The namespaces with something to learn, oldest first."""
    return [row["name"] for row in r.rows("SELECT name FROM namespaces ORDER BY first_ts, name", scope=None)]


# -- the trainer's source: the log, read in the order it was written --------------------------------

# What the trainer learns from, per stream: Claude's answers to eligible requests, local answers
# served or withheld for an audit (their decision), and users' verdicts on local answers. {only} is
# one namespace's rows, or every namespace's.
_EVENTS = {
    "requests": (
        "SELECT r.{seq} AS seq, r.id AS request_id, r.route, r.reason, r.decision, e.conversation, e.answer,"
        " e.max_tokens, e.end_user, r.namespace"
        " FROM requests r LEFT JOIN examples e ON e.request_id = r.id AND r.route = 'forward'"
        " WHERE r.{seq} > ? AND r.status = 200{only}"
        " AND (e.request_id IS NOT NULL OR (r.route = 'local' AND r.decision IS NOT NULL))"
        " ORDER BY r.{seq} LIMIT ?"
    ),
    "feedback": (
        "SELECT f.{seq} AS seq, f.request_id, f.good, l.conversation, l.answer, f.namespace"
        " FROM feedback f JOIN local_answers l ON l.request_id = f.request_id"
        " WHERE f.{seq} > ?{only} ORDER BY f.{seq} LIMIT ?"
    ),
    "forgets": (
        "SELECT g.{seq} AS seq, g.conversation, g.namespace FROM forgets g"
        " WHERE g.{seq} > ?{only} ORDER BY g.{seq} LIMIT ?"
    ),
}
_ALIAS = {"requests": "r", "feedback": "f", "forgets": "g"}


def _end(r: Reader, stream: str, namespace: str | None) -> Query:
    only = "" if namespace is None else " WHERE namespace = ?"
    return f"SELECT COALESCE(MAX({r.seq}), 0) AS seq FROM {stream}{only}", (() if namespace is None else (namespace,))


def log_end(r: Reader, namespace: str | None) -> dict[str, int]:
    """How far each stream has been written (its newest seq), in ``namespace`` or in all (None)."""
    ends = r.read([_end(r, stream, namespace) for stream in _EVENTS], scope=namespace)
    return {stream: int(found[0]["seq"]) if found else 0 for stream, found in zip(_EVENTS, ends, strict=True)}


def backlog(r: Reader, position: dict[str, int], namespace: str) -> int:
    """Rows of ``namespace`` past ``position``, in every stream."""
    counts = r.read(
        [
            (
                f"SELECT COUNT(*) AS n FROM {stream} WHERE namespace = ? AND {r.seq} > ?",
                (namespace, position.get(stream, 0)),
            )
            for stream in _EVENTS
        ],
        scope=namespace,
    )
    return sum(int(found[0]["n"]) for found in counts if found)


def learning_events(
    r: Reader, stream: str, after: int, limit: int, namespace: str | None
) -> tuple[list[dict[str, Any]], int]:
    """The rows of ``stream`` in ``namespace`` (None: in every namespace) written after seq ``after``
    that there is something to learn from, oldest first, at most ``limit``; and the seq read up to
    (past rows with nothing to learn)."""
    only = "" if namespace is None else f" AND {_ALIAS[stream]}.namespace = ?"
    where = (after,) if namespace is None else (after, namespace)
    # Both from one snapshot: the end, and the rows up to it.
    ends, rows = r.read(
        [_end(r, stream, namespace), (_EVENTS[stream].format(seq=r.seq, only=only), (*where, limit))], scope=namespace
    )
    end = int(ends[0]["seq"]) if ends else 0
    return rows, (rows[-1]["seq"] if len(rows) == limit else end)


def stored_with_conversation(r: Reader, namespace: str) -> list[dict[str, Any]]:
    """Every stored conversation of ``namespace``, with its request id (to find one question's)."""
    return r.rows(
        "SELECT e.request_id, e.conversation FROM examples e JOIN requests q ON q.id = e.request_id"
        " WHERE q.namespace = ? UNION ALL"
        " SELECT a.request_id, a.conversation FROM local_answers a JOIN requests q ON q.id = a.request_id"
        " WHERE q.namespace = ?",
        (namespace, namespace),
        scope=namespace,
    )


# Deleting stored conversations (training examples, local answers, and the attempts learning
# judged), all or those older than a time; the request log's numbers stay.
def forget_statements(before: float | None, namespace: str | None = None) -> list[Query]:
    """Of every namespace, or of ``namespace`` alone."""
    when = ["ts < ?"] if before is not None else []
    when_params: tuple[Any, ...] = (before,) if before is not None else ()
    of_request = [*when, "request_id IN (SELECT id FROM requests WHERE namespace = ?)"] if namespace else when
    of_request_params = (*when_params, namespace) if namespace else when_params
    own = [*when, "namespace = ?"] if namespace else when

    def where(conditions: list[str]) -> str:
        return " WHERE " + " AND ".join(conditions) if conditions else ""

    return [
        (f"DELETE FROM examples{where(of_request)}", of_request_params),
        (f"DELETE FROM local_answers{where(of_request)}", of_request_params),
        (f"UPDATE learning SET attempt = NULL{where(own)}", of_request_params),
        (f"UPDATE requests SET decision = NULL{where(own)}", of_request_params),
    ]
