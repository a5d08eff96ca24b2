"""The dashboard: one page (``dashboard.html``, no build step, nothing fetched from outside) and the
JSON it polls.

Every figure is aggregated over the request log (``finch.store.log.Log.dashboard``), bucketed so that
the page draws about sixty points whatever the log's length; the learning loop adds its live state
(phase, operating point, the bound's evidence, the trainer's backlog). Questions and answers appear
only for answers finch served itself, which are already in the log so that feedback can teach.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from finch.policy.bound import audit_interval
from finch.store.log import Log
from finch.vocabulary import explain


def page() -> bytes:
    return resources.files("finch.server").joinpath("dashboard.html").read_bytes()


def report(log: Log, learning: dict[str, Any] | None, namespace: str | None = None) -> dict[str, Any]:
    """Everything the page shows, in one response: of one namespace, or (None) of all."""
    data = log.dashboard(namespace)
    for row in data["recent"]:
        row["why"] = explain(row["reason"])
    days = data["days"]  # every day: the totals are their sums, one scan of the log fewer
    totals = {key: sum(day[key] for day in days) for key in days[0] if key != "day"} if days else None
    return {
        "bucket_s": data["bucket_s"],
        "series": _series(data["messages"], data["learning"]),
        "by_day": days[:30][::-1],
        "totals": totals or log.totals(namespace),
        "recent": data["recent"],
        "namespaces": log.first_local(namespace),
        "learning": learning,
    }


def _series(messages: list[dict[str, Any]], learning: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per bucket: the local share of Messages requests in it, and, as of its end, the
    operating point and the audited bad-local rate with its 95% interval (a confidence sequence, so
    every point of the line is as valid as the last)."""
    by_t: dict[int, dict[str, Any]] = {row["t"]: {**row} for row in messages}
    for row in learning:
        by_t.setdefault(row["t"], {"t": row["t"], "requests": 0, "forwarded": 0, "local": 0})
        by_t[row["t"]].update(audits=row["audits"], audits_bad=row["audits_bad"], threshold=row["threshold"])
    points, audits, bad, threshold = [], 0, 0, None
    for t in sorted(by_t):
        row = by_t[t]
        audits += row.get("audits") or 0
        bad += row.get("audits_bad") or 0
        threshold = row.get("threshold", threshold)  # carried over buckets where nothing was learned
        low, high = audit_interval(bad, audits)
        answered = (row["forwarded"] or 0) + (row["local"] or 0)
        points.append(
            {
                "t": t,
                "requests": row["requests"],
                "local_share": (row["local"] or 0) / answered if answered else None,
                "threshold": threshold,
                "audits": audits,
                "bad_local_estimate": bad / audits if audits else None,
                "bad_local_interval": [low, high],
            }
        )
    return points
