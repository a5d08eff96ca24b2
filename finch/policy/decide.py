"""The policy: from scores to a route. Pure functions of probabilities and counts, no models.

The scorer (``finch.learning.scorer``) computes a request's scores cheapest first, and the policy
says at each step whether to go on:

1. ``before_models``: what is known without a model (cold start, a blocked question, Claude's own
   answers differing, nothing certified yet) forwards at once.
2. ``ROUTER_FLOOR``: a question the router finds hopeless is not even attempted.
3. ``first_passing``: the candidate answers are tried in a fixed order, the recalled answer first
   and a written one only if that fails. The first whose P(good) reaches the operating point is the
   one served. The certifier counts its evidence by the same rule (``Certifier.observe_first``),
   so what the bound measures is what the policy serves.
4. ``serve_or_audit``: a would-be-local answer is served, or forwarded so that Claude's answer audits
   it (strategic sampling), or forwarded because the conservative phase's tripwire is up.

``Standing`` is the policy's state, published whole by the trainer and read once per request, so a
request never sees an operating point from one moment and an audit count from another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


@dataclass
class Decision:
    route: Route
    reason: str  # a Reason
    answer: str | None = None  # the local answer (served, or kept for the audit of a sampled forward)
    p_router: float | None = None
    p_validator: float | None = None
    p_good: float | None = None  # the stacker's score: what the operating point is compared with
    audit_chance: float = 1.0  # for a would-be-local answer: how likely it was to be audited
    # Every candidate scored, in the order tried, with its P(good): at a threshold t the first one
    # scoring at least t is what would be served there (what an audit's verdicts count toward).
    tried: tuple[tuple[str, float], ...] = field(default=())


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


def choose(
    tried: Sequence[tuple[str, float]],
    standing: Standing,
    fits: Callable[[str], bool],
    draw: Callable[[], float],
    p_router: float | None = None,
    p_validators: Sequence[float | None] = (),
    served_reason: str = Reason.LOCAL,
) -> Decision:
    """The route for a request whose candidates were scored in the order ``tried`` (``p_validators``:
    the validator's own score for each, for the record)."""
    tried = tuple(tried)
    if not tried:
        return Decision(Route.FORWARD, Reason.LOCAL_TOO_LONG, p_router=p_router)
    chosen = first_passing([score for _, score in tried], standing.threshold)
    rejected = chosen is None
    if rejected:  # the best of them, kept for the record
        chosen = max(range(len(tried)), key=lambda i: tried[i][1])
    answer, p_good = tried[chosen]
    p_validator = p_validators[chosen] if chosen < len(p_validators) else None
    reason = Reason.VALIDATOR_REJECT if rejected else Reason.LOCAL_TOO_LONG
    decision = Decision(Route.FORWARD, reason, answer, p_router, p_validator, p_good, tried=tried)
    if rejected:
        return decision
    return serve_or_audit(decision, standing, draw, served_reason) if fits(answer) else decision


def serve_or_audit(decision: Decision, standing: Standing, draw: Callable[[], float], served_reason: str) -> Decision:
    """A would-be-local answer: served, or forwarded to audit it (strategic sampling)."""
    if standing.phase == "conservative" and standing.over_bound:
        decision.reason = Reason.OVER_BOUND  # audited at every ask until the models do better
        return decision
    decision.audit_chance = standing.repeat_sample_rate if served_reason == Reason.REPEAT else standing.sample_rate
    sampled = draw() < decision.audit_chance
    decision.route, decision.reason = (Route.FORWARD, Reason.SAMPLED) if sampled else (Route.LOCAL, served_reason)
    return decision
