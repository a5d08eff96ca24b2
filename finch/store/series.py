"""The dashboard's reads: requests and learning over time, in buckets, and the recent requests
(``finch.server.dashboard`` shapes them). Written once over each backend's ``Reader``, as the other
reads are (``finch.store.queries``)."""

from __future__ import annotations

from typing import Any

from finch.conversation import Conversation
from finch.dialects import DIALECTS
from finch.store.queries import AUDITS_BAD, FORWARDED, LOCAL, Reader, by_day, only

_BUCKETS = 60  # points on the dashboard's time axis, whatever the log's span
_NICE_BUCKETS_S = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


def dashboard(r: Reader, namespace: str | None = None) -> dict[str, Any]:
    """The dashboard's series: bucket_s, messages and learning per bucket, recent requests, every
    day (``finch.server.dashboard`` shapes them)."""
    where, params = only(namespace)
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
    also, params = only(namespace, word="AND")
    return r.rows(
        f"SELECT {r.bucket()} AS t, COUNT(*) AS requests,"
        f" {FORWARDED} AS forwarded, {LOCAL} AS local,"
        " SUM(cost_usd) AS cost_usd, SUM(saved_usd) AS saved_usd"
        f" FROM requests WHERE path IN ({', '.join('?' * len(paths))}) AND route != 'reject'{also}"
        " GROUP BY t ORDER BY t",
        (bucket_s, bucket_s, *paths, *params),
        scope=namespace,
    )


def learning_over_time(r: Reader, bucket_s: int, namespace: str | None = None) -> list[dict[str, Any]]:
    """Per time bucket: audits and bad audits, and the operating point at the bucket's end."""
    where, params = only(namespace)
    return r.rows(
        "SELECT b.t, b.audits, b.audits_bad, l.threshold FROM ("
        f" SELECT {r.bucket()} AS t, SUM(audit) AS audits,"
        f" {AUDITS_BAD} AS audits_bad, MAX(id) AS last"
        f" FROM learning{where} GROUP BY t) b JOIN learning l ON l.id = b.last ORDER BY b.t",
        (bucket_s, bucket_s, *params),
        scope=namespace,
    )


def recent_requests(r: Reader, limit: int = 50, namespace: str | None = None) -> list[dict[str, Any]]:
    """The newest requests, a local answer's question and answer with it."""
    where, params = only(namespace)
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
