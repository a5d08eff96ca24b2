"""The policy: from scores to a route. Pure functions of probabilities and counts, no models.

The decision pipeline (``finch.learning.pipeline``) scores a question's candidate answers cheapest
first, in one order, and the policy says at each step whether to go on:

1. ``before_models``: what is known without a model (cold start, a blocked question, Claude's own
   answers differing, nothing certified yet) forwards at once.
2. ``ROUTER_FLOOR``: past Claude's repeated answer, a question the router finds hopeless is not
   attempted.
3. ``first_passing``: the first servable candidate whose P(good) reaches the operating point is the
   one served. The certifier counts an ``Attempt`` by the same rule (``Certifier.observe_first``),
   so what the bound measures is what the policy serves.
4. ``choose``: that answer is served, or forwarded so that Claude's answer audits it (strategic
   sampling), or forwarded because the conservative phase's tripwire is up.

``Standing`` is the policy's state, published whole by the trainer and read once per request, so a
request never sees an operating point from one moment and an audit count from another."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from finch.vocabulary import Reason, Route

# Below this the router's question is hopeless and the local attempt is not even made.
ROUTER_FLOOR = 0.5
# Forwards whose withheld local answer is judged against Claude's: the audits.
AUDITED_REASONS = (Reason.SAMPLED, Reason.OVER_BOUND)


@dataclass(frozen=True)
class Standing:
    """What the policy reads, as the trainer last published it."""

    phase: str  # cold_start, conservative or learned (finch.policy.schedule)
    threshold: float | None  # the certified operating point on P(good); None while none is
    sample_rate: float  # the chance that a would-be-local answer is audited instead
    over_bound: bool  # the conservative phase's tripwire: recent audits ran over the bound
    # An audit of Claude's own answer repeated teaches the models nothing new; it is there for the
    # bound alone, so it runs at the schedule's floor rate from the start.
    repeat_sample_rate: float = 0.05


class Source(StrEnum):
    """Where a candidate answer comes from, in the order they are tried."""

    REPEAT = "repeat"  # Claude's stored answer to this same question (unless its answers to it differ)
    RECALLED = "recalled"  # the answer the nearest past questions vote for
    WRITTEN = "written"  # the generator's, when it says something the ones before do not


@dataclass(frozen=True)
class Candidate:
    """One candidate answer, as scored where it was tried."""

    text: str
    source: str  # a Source: repeat, recalled or written
    p_good: float  # what the operating point is compared with (1.0 for Claude's repeated answer)
    p_validator: float | None = None  # the validator's own score, for the record


@dataclass(frozen=True)
class Attempt:
    """The record of one local attempt: the servable candidates in the order tried (the request
    path stops at the first that passes), the router's score, which one was chosen (served, or
    withheld for an audit) and how likely an audit was. The bound counts these records
    (``options``), so what it measures is what was served."""

    candidates: tuple[Candidate, ...] = ()
    p_router: float | None = None
    chosen: int | None = None
    audit_chance: float = 1.0

    @property
    def choice(self) -> Candidate | None:
        """The candidate chosen, if any."""
        return None if self.chosen is None else self.candidates[self.chosen]

    def options(self, bad: Sequence[bool | None]) -> list[tuple[float, bool | None]]:
        """Each candidate's (P(good), verdict), in order: at every threshold the first reaching it is
        the answer served there (``Certifier.observe_first``)."""
        return [(c.p_good, b) for c, b in zip(self.candidates, bad, strict=True)]

    def to_json(self) -> dict[str, Any]:
        return {
            "candidates": [[c.text, c.source, c.p_good, c.p_validator] for c in self.candidates],
            "p_router": self.p_router,
            "chosen": self.chosen,
            "audit_chance": self.audit_chance,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        candidates = tuple(Candidate(text, source, p, v) for text, source, p, v in data["candidates"])
        return cls(candidates, data["p_router"], data["chosen"], data["audit_chance"])


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: str  # a Reason
    attempt: Attempt | None = None  # when the models were asked

    @property
    def choice(self) -> Candidate | None:
        return self.attempt.choice if self.attempt is not None else None

    @property
    def answer(self) -> str | None:
        """The local answer: served, or kept for the audit of a sampled forward."""
        return self.choice.text if self.choice is not None else None

    @property
    def p_good(self) -> float | None:
        return self.choice.p_good if self.choice is not None else None

    @property
    def p_validator(self) -> float | None:
        return self.choice.p_validator if self.choice is not None else None

    @property
    def p_router(self) -> float | None:
        return self.attempt.p_router if self.attempt is not None else None


def before_models(standing: Standing, *, blocked: bool, varies: bool) -> Decision | None:
    """A forward decided before any model runs, or None to go on."""
    if standing.phase == "cold_start":
        return Decision(Route.FORWARD, Reason.COLD_START)
    if blocked:
        return Decision(Route.FORWARD, Reason.FEEDBACK_FORWARD)
    if varies:
        return Decision(Route.FORWARD, Reason.ANSWERS_VARY)  # Claude's own answers to it differ
    if standing.threshold is None:
        return Decision(Route.FORWARD, Reason.UNCERTIFIED)  # nothing is served before its bound is shown
    return None


def first_passing(scores: Sequence[float], threshold: float | None) -> int | None:
    """The index of the first score at or over the operating point, or None."""
    if threshold is None:
        return None
    return next((i for i, score in enumerate(scores) if score >= threshold), None)


def choose(attempt: Attempt, standing: Standing, draw: Callable[[], float]) -> Decision:
    """The route for an attempt whose servable candidates were scored in order (the request path
    stops at the first that passes, so it is the last one here)."""
    if not attempt.candidates:
        return Decision(Route.FORWARD, Reason.LOCAL_TOO_LONG, attempt)
    candidates = attempt.candidates
    chosen = first_passing([c.p_good for c in candidates], standing.threshold)
    if chosen is None:  # the best of them, kept for the record
        best = max(range(len(candidates)), key=lambda i: candidates[i].p_good)
        return Decision(Route.FORWARD, Reason.VALIDATOR_REJECT, replace(attempt, chosen=best))
    attempt = replace(attempt, chosen=chosen)
    if standing.phase == "conservative" and standing.over_bound:
        return Decision(Route.FORWARD, Reason.OVER_BOUND, attempt)  # audited at every ask until the models do better
    repeat = candidates[chosen].source == Source.REPEAT
    attempt = replace(attempt, audit_chance=standing.repeat_sample_rate if repeat else standing.sample_rate)
    if draw() < attempt.audit_chance:  # strategic sampling: Claude's answer audits this one
        return Decision(Route.FORWARD, Reason.SAMPLED, attempt)
    return Decision(Route.LOCAL, Reason.REPEAT if repeat else Reason.LOCAL, attempt)
