"""The rows of the request log that the trainer learns from (``finch.store.queries.learning_events``),
as events: Claude's answers to eligible requests, local answers served or withheld for an audit,
and users' verdicts on local answers; and what the trainer learned from one (``Judged``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from finch.conversation import Conversation
from finch.policy.decide import Attempt, Candidate, Decision, Source
from finch.vocabulary import Route


@dataclass(frozen=True)
class Event:
    """One row of the log to learn from."""

    table: str  # requests, feedback or forgets
    seq: int  # its rowid: the log's order
    request_id: str
    conversation: Conversation | None
    answer: str | None  # Claude's answer; for feedback, the local answer judged
    decision: Decision | None  # a would-be-local answer's decision
    good: bool | None = None  # a user's verdict (feedback)
    max_tokens: int | None = None  # the request's (None in rows logged before it was recorded)
    end_user: str = ""  # whom Claude's answer was given to (finch.policy.privacy)

    @property
    def served_locally(self) -> bool:
        """A local answer that went out unaudited: nothing to learn, only a count toward the bound."""
        return self.decision is not None and self.decision.route == Route.LOCAL

    @property
    def learns_from_claude(self) -> bool:
        """Claude's answer to a forwarded request (not a local answer served, nor a verdict)."""
        return self.table == "requests" and self.conversation is not None and not self.served_locally

    @classmethod
    def from_request(cls, row: dict[str, Any]) -> Event:
        decision = None
        if row["decision"] is not None:
            decision = Decision(row["route"], row["reason"], _attempt(json.loads(row["decision"])))
        return cls(
            "requests",
            row["seq"],
            row["request_id"],
            _conversation(row),
            row["answer"],
            decision,
            None,
            row["max_tokens"],
            row.get("end_user") or "",  # absent from rows read before end users were kept
        )

    @classmethod
    def from_feedback(cls, row: dict[str, Any]) -> Event:
        conversation = Conversation.from_json(row["conversation"])
        return cls("feedback", row["seq"], row["request_id"], conversation, row["answer"], None, bool(row["good"]))


def forget_event(row: dict[str, Any]) -> Event:
    """A question its namespace asked finch to forget (conversation None: everything it taught)."""
    return Event("forgets", row["seq"], "", _conversation(row), None, None)


def _conversation(row: dict[str, Any]) -> Conversation | None:
    return Conversation.from_json(row["conversation"]) if row["conversation"] is not None else None


def _attempt(data: dict[str, Any]) -> Attempt:
    """The logged attempt; a row written before attempts were logged whole has the candidates tried
    as [text, P(good)] and the chosen one's text."""
    if "candidates" in data:
        return Attempt.from_json(data)
    candidates = tuple(Candidate(text, Source.RECALLED, float(p)) for text, p in data["tried"])
    chosen = next((i for i, c in enumerate(candidates) if c.text == data["answer"]), None)
    if chosen is None:
        candidates, chosen = (*candidates, Candidate(data["answer"], Source.RECALLED, data["p_good"])), len(candidates)
    return Attempt(candidates, None, chosen, data["audit_chance"])


@dataclass
class Judged:
    """What the trainer learned from one event; the trainer logs it."""

    good: bool | None
    divergence: float | None
    p_router: float | None
    p_validator: float | None
    losses: dict[str, float]
    audit_good: bool | None = None  # for a sampled forward: was the withheld local answer good?
    p_good: float | None = None  # the stacker's score for the attempt, before this verdict
    attempt: str | None = None  # the local answer judged
