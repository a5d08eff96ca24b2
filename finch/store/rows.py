"""What the store writes besides requests, as plain records: what the trainer learned from an event,
a user's verdict, and the learning a restarted trainer takes back. Each backend turns them into its
own statements (``finch.store.sqlite``), so no SQL leaves the store."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from finch.vocabulary import DEFAULT_NAMESPACE

LEARNING_COLUMNS = frozenset(
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
        "namespace",
    }
)


@dataclass(frozen=True)
class Learned:
    """One learning event: what the trainer judged and learned (columns: migrations 0002-0006)."""

    values: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    """A user's verdict on an answer finch served."""

    request_id: str
    good: bool
    namespace: str = DEFAULT_NAMESPACE
    ts: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ForgetLearningAfter:
    """The learning events of ``namespace`` after ``position`` (a checkpoint's place in the log: each
    stream's last seq) are gone: the trainer that restarts from that checkpoint learns them again."""

    position: dict[str, int]
    namespace: str = DEFAULT_NAMESPACE


@dataclass(frozen=True)
class Forget:
    """``namespace`` asked to forget one question (its conversation, as JSON) or, with None,
    everything it taught. The stored conversations go at once; the trainer forgets what it learned."""

    namespace: str
    conversation: str | None
    request_ids: tuple[str, ...] = ()  # the question's stored conversations (none: everything's)
    ts: float = field(default_factory=time.time)


Row = Learned | Verdict | ForgetLearningAfter | Forget


def learning_row(**values: Any) -> Learned:
    unknown = set(values) - LEARNING_COLUMNS
    if unknown:
        raise ValueError(f"no such learning column(s): {sorted(unknown)}")
    return Learned(values)


def feedback_row(request_id: str, good: bool, namespace: str = DEFAULT_NAMESPACE) -> Verdict:
    return Verdict(request_id, good, namespace)


def forget_learning_after(position: dict[str, int], namespace: str = DEFAULT_NAMESPACE) -> ForgetLearningAfter:
    return ForgetLearningAfter(dict(position), namespace)
