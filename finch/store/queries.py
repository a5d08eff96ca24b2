"""The questions asked of the request log, in SQL both backends speak: totals and per-day summaries
for `finch stats`, the dashboard's series, and the trainer's source of learning events.

Each takes a ``Reader``: a backend's read-only access, with the few expressions that differ between
SQLite and PostgreSQL (the order of a stream's rows, a day, a time bucket)."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

from finch.conversation import Conversation
from finch.dialects import DIALECTS

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


_FORWARDED, _LOCAL = _count("route = 'forward'"), _count("route = 'local'")
_LEARNED, _AUDITS_BAD = _count("kind = 'claude'"), _count("audit = 1 AND audit_good = 0")
_SUMMARY_COLUMNS = f"""
    COUNT(*) AS requests,
    {_FORWARDED} AS forwarded,
    {_LOCAL} AS local,
    {_count("route = 'reject'")} AS rejected,
    {_count("status >= 400")} AS errors,
    COALESCE(SUM(input_tokens), 0) AS input_tokens,
    COALESCE(SUM(output_tokens), 0) AS output_tokens,
    COALESCE(SUM(cost_usd), 0.0) AS cost_usd,
    COALESCE(SUM(saved_usd), 0.0) AS saved_usd
"""


# What people read takes ``namespace``: one namespace's rows, or (None) every namespace's.
def _only(namespace: str | None, column: str = "namespace", word: str = "WHERE") -> Query:
    return ("", ()) if namespace is None else (f" {word} {column} = ?", (namespace,))


def totals(r: Reader, namespace: str | None = None) -> dict[str, Any]:
    where, params = _only(namespace)
    found = r.rows(f"SELECT {_SUMMARY_COLUMNS} FROM requests{where}", params, scope=namespace)
    return found[0] if found else _empty()


def by_day(r: Reader, days: int | None = 30, namespace: str | None = None) -> list[dict[str, Any]]:
    """Per UTC day, newest first; every day when ``days`` is None. (Grouped on whole days of unix
    time, which costs a third of grouping on a date on a large log.)"""
    where, params = _only(namespace)
    limit = "" if days is None else " LIMIT ?"
    return r.rows(
        f"SELECT {r.day_label} AS day, {_SUMMARY_COLUMNS} FROM requests{where}"
        f" GROUP BY {r.day_key} ORDER BY day DESC{limit}",
        params if days is None else (*params, days),
        scope=namespace,
    )


def by_reason(r: Reader, namespace: str | None = None) -> list[dict[str, Any]]:
    where, params = _only(namespace)
    return r.rows(
        f"SELECT route, reason, COUNT(*) AS requests FROM requests{where}"
        " GROUP BY route, reason ORDER BY requests DESC",
        params,
        scope=namespace,
    )


def example_count(r: Reader, namespace: str | None = None) -> int:
    where, params = _only(namespace, "q.namespace")
    found = r.rows(
        f"SELECT COUNT(*) AS n FROM examples e JOIN requests q ON q.id = e.request_id{where}", params, scope=namespace
    )
    return int(found[0]["n"]) if found else 0


def first_local(r: Reader, namespace: str | None = None) -> list[dict[str, Any]]:
    """Per namespace (one, or None: every one): its Messages requests, and how many of them it took
    up to and with its first local answer (None while it has served none)."""
    where, params = _only(namespace, "r.namespace", word="AND")
    rows = r.rows(
        f"SELECT r.namespace, COUNT(*) AS requests,"
        f" SUM(CASE WHEN r.{r.seq} <= f.first THEN 1 ELSE 0 END) AS until_first_local"
        f" FROM requests r LEFT JOIN (SELECT namespace, MIN({r.seq}) AS first FROM requests"
        f" WHERE route = 'local' GROUP BY namespace) f ON f.namespace = r.namespace"
        f" WHERE r.path IN ('/v1/messages', '/v1/chat/completions') AND r.namespace <> ''{where}"
        " GROUP BY r.namespace ORDER BY r.namespace",
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

    where, params = _only(namespace)
    found = r.rows(
        f"SELECT {_LEARNED} AS learned, COALESCE(SUM(audit), 0) AS audits,"
        f" {_AUDITS_BAD} AS audits_bad,"
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
}
_ALIAS = {"requests": "r", "feedback": "f"}


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


# Deleting stored conversations (training examples, local answers, and the attempts learning
# judged), all or those older than a time; the request log's numbers stay.
def forget_statements(before: float | None) -> list[Query]:
    where, params = (" WHERE ts < ?", (before,)) if before is not None else ("", ())
    return [
        (f"DELETE FROM examples{where}", params),
        (f"DELETE FROM local_answers{where}", params),
        (f"UPDATE learning SET attempt = NULL{where}", params),
        (f"UPDATE requests SET decision = NULL{where}", params),
    ]


# -- the dashboard ---------------------------------------------------------------------------------

_BUCKETS = 60  # points on the dashboard's time axis, whatever the log's span
_NICE_BUCKETS_S = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


def dashboard(r: Reader, namespace: str | None = None) -> dict[str, Any]:
    """The dashboard's series: bucket_s, messages and learning per bucket, recent requests, every
    day (``finch.server.dashboard`` shapes them)."""
    where, params = _only(namespace)
    found = r.rows(f"SELECT MIN(ts) AS first, MAX(ts) AS last FROM requests{where}", params, scope=namespace)
    if not found:
        return {"bucket_s": 60, "messages": [], "learning": [], "recent": [], "days": []}
    span = (found[0]["last"] or 0.0) - (found[0]["first"] or 0.0)
    bucket_s = next((b for b in _NICE_BUCKETS_S if span / b <= _BUCKETS), _NICE_BUCKETS_S[-1])
    return {
        "bucket_s": bucket_s,
        "messages": messages_over_time(r, bucket_s, namespace),
        "learning": learning_over_time(r, bucket_s, namespace),
        "recent": recent_requests(r, namespace=namespace),
        "days": by_day(r, None, namespace),
    }


def messages_over_time(r: Reader, bucket_s: int, namespace: str | None = None) -> list[dict[str, Any]]:
    """Requests finch could learn from (a path some dialect speaks) per time bucket, by route, with dollars."""
    paths = tuple(DIALECTS)
    also, params = _only(namespace, word="AND")
    return r.rows(
        f"SELECT {r.bucket()} AS t, COUNT(*) AS requests,"
        f" {_FORWARDED} AS forwarded, {_LOCAL} AS local,"
        " SUM(cost_usd) AS cost_usd, SUM(saved_usd) AS saved_usd"
        f" FROM requests WHERE path IN ({', '.join('?' * len(paths))}) AND route != 'reject'{also}"
        " GROUP BY t ORDER BY t",
        (bucket_s, bucket_s, *paths, *params),
        scope=namespace,
    )


def learning_over_time(r: Reader, bucket_s: int, namespace: str | None = None) -> list[dict[str, Any]]:
    """Per time bucket: audits and bad audits, and the operating point at the bucket's end."""
    where, params = _only(namespace)
    return r.rows(
        "SELECT b.t, b.audits, b.audits_bad, l.threshold FROM ("
        f" SELECT {r.bucket()} AS t, SUM(audit) AS audits,"
        f" {_AUDITS_BAD} AS audits_bad, MAX(id) AS last"
        f" FROM learning{where} GROUP BY t) b JOIN learning l ON l.id = b.last ORDER BY b.t",
        (bucket_s, bucket_s, *params),
        scope=namespace,
    )


def recent_requests(r: Reader, limit: int = 50, namespace: str | None = None) -> list[dict[str, Any]]:
    """The newest requests, a local answer's question and answer with it."""
    where, params = _only(namespace)
    rows = r.rows(
        "SELECT r.id, r.ts, r.model, r.route, r.reason, r.status, r.latency_ms, r.input_tokens,"
        " r.output_tokens, r.cost_usd, r.saved_usd, a.conversation, a.answer, f.good AS feedback"
        f" FROM (SELECT * FROM requests{where} ORDER BY ts DESC LIMIT ?) r"
        " LEFT JOIN local_answers a ON a.request_id = r.id"
        " LEFT JOIN (SELECT request_id, MIN(good) AS good FROM feedback GROUP BY request_id) f"
        " ON f.request_id = r.id ORDER BY r.ts DESC",
        (*params, limit),
        scope=namespace,
    )
    for row in rows:
        conversation = row.pop("conversation")
        row["question"] = Conversation.from_json(conversation).turns[-1][1] if conversation else None
    return rows
