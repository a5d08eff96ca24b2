"""Rows other than requests that the store writes off the caller's thread: the trainer's learning
events, users' verdicts, and the deletions a restarted trainer makes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    """Any other row to write off the caller's thread: one SQL statement and its parameters."""

    sql: str
    params: tuple[Any, ...]


_LEARNING_COLUMNS = frozenset(
    {
        "ts",
        "request_id",
        "kind",
        "audit",
        "audit_good",
        "good",
        "divergence",
        "p_router",
        "p_validator",
        "p_good",
        "threshold",
        "loss_generator",
        "loss_router",
        "loss_validator",
        "seconds",
        "attempt",
        "seq",
    }
)


def learning_row(**values: Any) -> Row:
    """One learning event for the ``learning`` table (columns: migrations 0002-0006)."""
    unknown = set(values) - _LEARNING_COLUMNS
    if unknown:
        raise ValueError(f"no such learning column(s): {sorted(unknown)}")
    columns = ", ".join(values)
    return Row(f"INSERT INTO learning ({columns}) VALUES ({', '.join('?' * len(values))})", tuple(values.values()))


def forget_learning_after(position: dict[str, int]) -> Row:
    """Delete the learning rows of events after ``position`` (a checkpoint's place in the log: the
    table each event came from, and its rowid there). Its trainer learns them again."""
    return Row(
        "DELETE FROM learning WHERE (kind = 'claude' AND seq > ?) OR (kind = 'feedback' AND seq > ?)",
        (position.get("requests", 0), position.get("feedback", 0)),
    )


def feedback_row(request_id: str, good: bool) -> Row:
    return Row("INSERT INTO feedback VALUES (?, ?, ?)", (request_id, time.time(), int(good)))
