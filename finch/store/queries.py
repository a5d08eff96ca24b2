"""Read-only questions asked of the request log: totals and per-day summaries for `finch stats`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def by_day(db: Path, days: int = 30) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    return read_rows(
        db,
        f"SELECT date(ts, 'unixepoch') AS day, {_SUMMARY_COLUMNS} FROM requests GROUP BY day ORDER BY day DESC LIMIT ?",
        (days,),
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
