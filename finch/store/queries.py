"""Read-only questions asked of the request log: totals and per-day summaries for `finch stats`, the
dashboard's series, and the trainer's source of learning events."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finch.conversation import Conversation
from finch.dialects import DIALECTS
from finch.store.db import read_rows

_SUMMARY_COLUMNS = """
    COUNT(*) AS requests,
    COALESCE(SUM(route = 'forward'), 0) AS forwarded,
    COALESCE(SUM(route = 'local'), 0) AS local,
    COALESCE(SUM(route = 'reject'), 0) AS rejected,
    COALESCE(SUM(status >= 400), 0) AS errors,
    COALESCE(SUM(input_tokens), 0) AS input_tokens,
    COALESCE(SUM(output_tokens), 0) AS output_tokens,
    COALESCE(SUM(cost_usd), 0.0) AS cost_usd,
    COALESCE(SUM(saved_usd), 0.0) AS saved_usd
"""


def totals(db: Path) -> dict[str, Any]:
    if not db.exists():
        return _empty()
    return read_rows(db, f"SELECT {_SUMMARY_COLUMNS} FROM requests")[0]


def by_day(db: Path, days: int | None = 30) -> list[dict[str, Any]]:
    """Per UTC day, newest first; every day when ``days`` is None. (Grouped on whole days of unix
    time, which is what date(ts, 'unixepoch') reads, at a third of its cost on a large log.)"""
    if not db.exists():
        return []
    return read_rows(
        db,
        f"SELECT date(CAST(ts / 86400 AS INTEGER) * 86400, 'unixepoch') AS day, {_SUMMARY_COLUMNS}"
        " FROM requests GROUP BY CAST(ts / 86400 AS INTEGER) ORDER BY day DESC LIMIT ?",
        (-1 if days is None else days,),
    )


def by_reason(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    return read_rows(
        db,
        "SELECT route, reason, COUNT(*) AS requests FROM requests GROUP BY route, reason ORDER BY requests DESC",
    )


def example_count(db: Path) -> int:
    if not db.exists():
        return 0
    return int(read_rows(db, "SELECT COUNT(*) AS n FROM examples")[0]["n"])


def _empty() -> dict[str, Any]:
    keys = ("requests", "forwarded", "local", "rejected", "errors", "input_tokens", "output_tokens")
    return {**dict.fromkeys(keys, 0), "cost_usd": 0.0, "saved_usd": 0.0}


def learning_summary(db: Path) -> dict[str, Any]:
    """What the trainer has learned and what the audits say of the answers finch serves."""
    from finch.policy.bound import audit_interval

    empty = {"learned": 0, "audits": 0, "audits_bad": 0, "threshold": None}
    if not db.exists():
        return {**empty, "bad_local_estimate": None, "bad_local_interval": [0.0, 1.0]}
    row = read_rows(
        db,
        "SELECT COALESCE(SUM(kind = 'claude'), 0) AS learned, COALESCE(SUM(audit), 0) AS audits,"
        " COALESCE(SUM(audit = 1 AND audit_good = 0), 0) AS audits_bad,"
        " (SELECT threshold FROM learning ORDER BY id DESC LIMIT 1) AS threshold FROM learning",
    )[0]
    low, high = audit_interval(row["audits_bad"], row["audits"])
    estimate = row["audits_bad"] / row["audits"] if row["audits"] else None
    return {**row, "bad_local_estimate": estimate, "bad_local_interval": [low, high]}


def stored_local_answer(db: Path, request_id: str) -> tuple[Conversation, str] | None:
    """The conversation and the answer finch served locally for a request, if it is in the log."""
    rows = read_rows(db, "SELECT conversation, answer FROM local_answers WHERE request_id = ?", (request_id,))
    return (Conversation.from_json(rows[0]["conversation"]), rows[0]["answer"]) if rows else None


def request_is_logged(db: Path, request_id: str) -> bool:
    return bool(read_rows(db, "SELECT 1 FROM requests WHERE id = ?", (request_id,)))


def recent_texts(db: Path, limit: int = 2000) -> Iterator[str]:
    """The turns and answers of the most recent training examples."""
    rows = read_rows(db, "SELECT conversation, answer FROM examples ORDER BY ts DESC LIMIT ?", (limit,))
    for row in rows:
        yield from (t for _, t in Conversation.from_json(row["conversation"]).turns)
        yield row["answer"]


# -- the trainer's source: the log, read in the order it was written --------------------------------

# What the trainer learns from, per table: Claude's answers to eligible requests, local answers
# served or withheld for an audit (their decision), and users' verdicts on local answers.
_EVENTS = {
    "requests": (
        "SELECT r.rowid AS seq, r.id AS request_id, r.route, r.reason, r.decision, e.conversation, e.answer,"
        " e.max_tokens"
        " FROM requests r LEFT JOIN examples e ON e.request_id = r.id AND r.route = 'forward'"
        " WHERE r.rowid > ? AND r.rowid <= ? AND r.status = 200"
        " AND (e.request_id IS NOT NULL OR (r.route = 'local' AND r.decision IS NOT NULL))"
        " ORDER BY r.rowid LIMIT ?"
    ),
    "feedback": (
        "SELECT f.rowid AS seq, f.request_id, f.good, l.conversation, l.answer"
        " FROM feedback f JOIN local_answers l ON l.request_id = f.request_id"
        " WHERE f.rowid > ? AND f.rowid <= ? ORDER BY f.rowid LIMIT ?"
    ),
}


def log_end(db: Path) -> dict[str, int]:
    """How far each of the trainer's tables has been written (its newest rowid)."""
    conn = _read_only(db)
    try:
        return {table: _last_rowid(conn, table) for table in _EVENTS}
    finally:
        conn.close()


def learning_events(db: Path, table: str, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The rows of ``table`` written after rowid ``after`` that there is something to learn from,
    oldest first, at most ``limit``; and the rowid read up to (past rows with nothing to learn)."""
    conn = _read_only(db)
    try:
        conn.execute("BEGIN")  # one read: the end and the rows before it
        end = _last_rowid(conn, table)
        rows = [dict(row) for row in conn.execute(_EVENTS[table], (after, end, limit))]
        conn.execute("COMMIT")
    finally:
        conn.close()
    return rows, (rows[-1]["seq"] if len(rows) == limit else end)


def _read_only(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def _last_rowid(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {table}").fetchone()[0])


def forget(db: Path, before: float | None = None) -> int:
    """Delete stored conversations (training examples, local answers, and the attempts learning
    judged), all or those older than ``before`` (unix seconds). The request log's numbers stay.
    Returns how many conversations were deleted."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        where, params = ("WHERE ts < ?", (before,)) if before is not None else ("", ())
        with conn:
            deleted = conn.execute(f"DELETE FROM examples {where}", params).rowcount
            deleted += conn.execute(f"DELETE FROM local_answers {where}", params).rowcount
            conn.execute(f"UPDATE learning SET attempt = NULL {where}", params)
            conn.execute(f"UPDATE requests SET decision = NULL {where}", params)
        conn.execute("VACUUM")  # the text is gone from the file, not just unlinked
        return deleted
    finally:
        conn.close()


# -- the dashboard ---------------------------------------------------------------------------------

_BUCKETS = 60  # points on the dashboard's time axis, whatever the log's span
_NICE_BUCKETS_S = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


def bucket_seconds(db: Path) -> int:
    """A round bucket width that cuts the log's span into at most about ``_BUCKETS`` points."""
    row = read_rows(db, "SELECT MIN(ts) AS first, MAX(ts) AS last FROM requests")[0]
    span = (row["last"] or 0.0) - (row["first"] or 0.0)
    return next((b for b in _NICE_BUCKETS_S if span / b <= _BUCKETS), _NICE_BUCKETS_S[-1])


def messages_over_time(db: Path, bucket_s: int) -> list[dict[str, Any]]:
    """Requests finch could learn from (a path some dialect speaks) per time bucket, by route, with dollars."""
    paths = tuple(DIALECTS)
    return read_rows(
        db,
        "SELECT CAST(ts / ? AS INTEGER) * ? AS t, COUNT(*) AS requests,"
        " SUM(route = 'forward') AS forwarded, SUM(route = 'local') AS local,"
        " SUM(cost_usd) AS cost_usd, SUM(saved_usd) AS saved_usd"
        f" FROM requests WHERE path IN ({', '.join('?' * len(paths))}) AND route != 'reject'"
        " GROUP BY t ORDER BY t",
        (bucket_s, bucket_s, *paths),
    )


def learning_over_time(db: Path, bucket_s: int) -> list[dict[str, Any]]:
    """Per time bucket: audits and bad audits, and the operating point at the bucket's end."""
    return read_rows(
        db,
        "SELECT b.t, b.audits, b.audits_bad, l.threshold FROM ("
        " SELECT CAST(ts / ? AS INTEGER) * ? AS t, SUM(audit) AS audits,"
        " SUM(audit = 1 AND audit_good = 0) AS audits_bad, MAX(id) AS last"
        " FROM learning GROUP BY t) b JOIN learning l ON l.id = b.last ORDER BY b.t",
        (bucket_s, bucket_s),
    )


def recent_requests(db: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The newest requests, a local answer's question and answer with it."""
    rows = read_rows(
        db,
        "SELECT r.id, r.ts, r.model, r.route, r.reason, r.status, r.latency_ms, r.input_tokens,"
        " r.output_tokens, r.cost_usd, r.saved_usd, a.conversation, a.answer, f.good AS feedback"
        " FROM (SELECT * FROM requests ORDER BY ts DESC LIMIT ?) r"
        " LEFT JOIN local_answers a ON a.request_id = r.id"
        " LEFT JOIN (SELECT request_id, MIN(good) AS good FROM feedback GROUP BY request_id) f"
        " ON f.request_id = r.id ORDER BY r.ts DESC",
        (limit,),
    )
    for row in rows:
        conversation = row.pop("conversation")
        row["question"] = Conversation.from_json(conversation).turns[-1][1] if conversation else None
    return rows
