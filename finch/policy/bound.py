"""The bad-local bound, valid however often finch checks it.

finch checks its bound after every judged answer, at every threshold, for as long as it runs. A
fixed-sample interval (Clopper-Pearson) re-checked that way certifies a region that is truly at the
bound about a quarter of the time, not 5% (``benchmarks/bound.py`` measures it). Two anytime-valid
tools replace it:

* ``BettingTest`` (``finch.policy.betting``): one region's test of "the bad rate is below the
  bound", by betting, with an alarm that withdraws a certificate if the rate rises.
* ``Certifier``: one such test per region of a sequence of nested regions, strictest first, tested
  by the fallback procedure (Wiens, 2003), Learn-then-Test's fixed-sequence testing with delta spread
  over the first few regions instead of staked on the first alone. Each region starts with its
  share of delta (``WEIGHTS``); a certified region passes everything it has on to the next one,
  except the repeats' region (the first), which passes its share to the regions with shares of
  their own, in proportion to them (0.99 and 0.98, half each), as its handover does (below). So
  a clean sequence certifies on (almost) the whole delta, as fixed-sequence testing would, while a
  strictest region that is rare (Claude's repeated answers, on traffic that does not repeat) or
  that holds a few bad answers no longer blocks every region after it.
  It is valid at every look: a false certification needs some truly-bad region's test to cross
  1/(its share), and the shares a truly-bad region can ever hold (its own, plus what truly-good
  regions before it can pass on to it) add up over all truly-bad regions to at most delta.
* The handover. The repeats' region (the first) sees an answer only once a question has come back
  (its second sighting, judged against Claude's answer to it). On traffic that does not repeat it
  sees none, and its share would sit idle for good. So at the ``HANDOVER_AT``-th request, fixed in
  advance, if it has seen nothing it gives its share up for good (it never certifies) to the regions that have shares of
  their own, in proportion to them. Each region counts what it is given only on the evidence it
  earns from then on: ``given * wealth / max(1, wealth at the handover)``, and passes it on when it
  is certified, as it does its own. That keeps the whole valid. If the repeats' region is truly
  bad, its share is capital not yet staked (its wealth is 1 until the handover), and moving it at a
  fixed time onto other regions' bets from then on is a bet like any other: its value at the move
  is at most the share (hence the ``max(1, ...)``), and a nonnegative supermartingale after it while
  those regions are truly bad. If it is truly good, what the handover gives each region is at most
  what its certificate would have passed on to the same region (which is why a certified repeats'
  region passes its share on in the same proportions), so the accounting above covers it.
  ``benchmarks/bound.py --no-repeats`` measures it.

``audit_interval`` is the interval `finch stats` shows for the audited bad rate: a confidence
sequence (the beta-binomial mixture of Robbins, 1970), also valid at every look.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy.optimize import brentq
from scipy.special import betaln

from finch.policy.betting import DELTA, BettingTest

_NOT_SERVED = object()

# Thresholds on the score (P(good)), strictest first; the conservative phase serves only from 0.95 up.
# 1.0 is Claude's own answer repeated (finch.policy.decide); a model's score stays under it.
THRESHOLDS: tuple[float, ...] = (
    1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.9, 0.88, 0.85, 0.8, 0.75, 0.7
)  # fmt: skip
# Each region's own share of delta, strictest first; the rest start with none. Half on the repeats'
# region, a quarter each on the two strictest regions of model scores: measured in
# benchmarks/bound.py, what a clean sequence pays for them is about 40 more answers than staking all
# on one region.
WEIGHTS: tuple[float, ...] = (0.5, 0.25, 0.25)
# The request at which an empty repeats' region hands its share on (see above). Early, because what
# is handed on counts only the evidence earned after it: at request 200 of a paraphrase-only stream
# the regions given it have earned almost nothing yet. On chat traffic the first question asked a
# third time comes within the first 20 requests; on Banking77 drawn with repeats, at 183-333 (seeds
# 0-3), so there the handover is made on some streams and not others (BENCHMARKS.md, "The bound").
HANDOVER_AT = 200


# What the printed bound is over (finch stats, the dashboard).
BOUND_OVER = "local answers served at the operating point (P(good) >= threshold), audited or not"


@dataclass
class Certifier:
    """The fallback procedure over nested regions ``score >= t``, strictest ``t`` first."""

    alpha: float
    delta: float = DELTA
    thresholds: Sequence[float] = THRESHOLDS
    tests: list[BettingTest] = field(default_factory=list)
    weights: Sequence[float] = WEIGHTS  # shares of delta, strictest first; (1.0,) is fixed-sequence testing
    floor: float = 0.05  # the lowest chance of being judged that any answer can have (the sampling's lowest rate)
    requests: int = 0  # requests that reached the bound (observe_first), judged or served
    handed_over: bool = False  # has the repeats' region, empty, handed its share on (see above)?
    handover_at: int | None = HANDOVER_AT  # None: no handover (benchmarks/bound.py compares)

    def __post_init__(self) -> None:
        if list(self.thresholds) != sorted(self.thresholds, reverse=True):
            raise ValueError("thresholds must run strictest first")
        if abs(sum(self.weights) - 1.0) > 1e-9 or min(self.weights) < 0:
            raise ValueError("weights must be shares of delta that add up to 1")
        if not 0.0 < self.floor <= 1.0:
            raise ValueError(f"floor must be in (0, 1], got {self.floor}")
        if not self.tests:
            self.tests = [BettingTest(self.alpha, self.delta) for _ in self.thresholds]
        for test in self.tests:  # the sampling now in force sizes the even bets, whatever was saved
            test.floor = self.floor

    def observe(self, score: float, bad: bool | None, p_judged: float = 1.0) -> None:
        """An answer scored ``score`` enters every region it falls in."""
        self.observe_first([(score, bad)], p_judged)

    def observe_first(self, options: Sequence[tuple[float, bool | None]], p_judged: float = 1.0) -> None:
        """One request whose candidate answers the policy tries in turn (``finch.policy.decide``):
        at each threshold the first option scoring at least it is the answer served there, so that
        option's verdict is the one its region counts."""
        for t, test in zip(self.thresholds, self.tests, strict=True):
            served = next((bad for score, bad in options if score >= t), _NOT_SERVED)
            if served is not _NOT_SERVED:
                test.observe(served, p_judged)  # type: ignore[arg-type]
        self.requests += 1
        if self.requests == self.handover_at:
            self._hand_over()

    def _hand_over(self) -> None:
        """If the repeats' region has seen nothing, it hands its share on; every other region notes
        the wealth it has now, which what it is given does not count."""
        repeats = self.tests[0]
        no_one_to_give_to = self.thresholds[0] < 1.0 or self.weights[0] >= 1.0  # or no repeats' region
        if no_one_to_give_to or repeats.seen or repeats.epoch:
            return
        self.handed_over = True
        for test in self.tests[1:]:
            test.log_handover = max(0.0, test.log_total)

    def _weight(self, i: int) -> float:
        return self.weights[i] if i < len(self.weights) else 0.0

    def _from_first(self, i: int) -> float:
        """The part of the first region's share that region ``i`` (after it) receives, whether the
        first passes it on certified or hands it over: in proportion to the shares of their own of
        the regions after it, or all to the next if none has one."""
        rest = sum(self.weights[1:])
        return self._weight(i) / rest if rest > 0 else float(i == 1)

    def shares(self) -> list[float]:
        """Each region's share of delta now, as its wealth is measured against: its own, plus what the
        certified regions before it passed on, plus what the handover gave it and them, counted on
        the evidence earned since the handover."""
        first, first_share = self.tests[0], 0.0 if self.handed_over else self._weight(0)
        passed = first_share if first.passes(first_share) else 0.0  # in full: a certified region's share
        gift = self._weight(0) if self.handed_over else 0.0  # on the evidence earned since the handover
        shares, carried, carried_given = [first_share], 0.0, 0.0
        for i, test in enumerate(self.tests[1:], start=1):
            part = self._from_first(i)
            own = carried + self._weight(i) + passed * part
            given = carried_given + gift * part
            share = own + given * math.exp(-test.log_handover)
            shares.append(share)
            if test.passes(share):
                carried, carried_given = own, given
            else:  # a failing region passes nothing on
                carried = carried_given = 0.0
        return shares

    def certified(self, floor: float = 0.0) -> float | None:
        """The loosest certified threshold not below ``floor``, or None."""
        best = None
        for t, test, share in zip(self.thresholds, self.tests, self.shares(), strict=True):
            if t >= floor and test.passes(share):
                best = t
        return best

    def region(self, threshold: float | None) -> BettingTest | None:
        return None if threshold is None else self.tests[list(self.thresholds).index(threshold)]

    def needed(self, threshold: float) -> float:
        """The evidence (wealth) the region at ``threshold`` needs to be certified on its share now."""
        i = list(self.thresholds).index(threshold)
        return self.tests[i].needed(self.shares()[i])

    def nearest(self) -> dict[str, Any] | None:
        """For people waiting for finch to serve: the uncertified region nearest its mark (the most
        of the evidence it needs, on a log scale), and about how many clean judged answers in it
        would certify it at its next bet. None when every region that holds a share passes."""
        best = None
        for t, test, share in zip(self.thresholds, self.tests, self.shares(), strict=True):
            if share <= 0.0 or test.passes(share):
                continue
            needed = test.needed(share)
            progress = max(test.log_total, 0.0) / math.log(needed)
            if best is None or progress > best[0]:
                gain = math.log1p(test.bet(1.0) * test.alpha)  # what one clean judged answer earns now
                to_go = math.inf if gain <= 0 else (math.log(needed) - test.log_total) / gain
                best = (progress, t, test.wealth, needed, to_go)
        if best is None:
            return None
        _, threshold, evidence, needed, to_go = best
        clean = None if math.isinf(to_go) else math.ceil(to_go)
        return {"threshold": threshold, "evidence": evidence, "evidence_needed": needed, "clean_answers_to_go": clean}

    def describe(self, threshold: float | None) -> dict[str, Any]:
        """What the bound is over, and how sure, at the operating point ``threshold`` (None: none,
        and then the region nearest to being certified)."""
        region = self.region(threshold)
        return {
            "over": BOUND_OVER,
            "confidence": 1 - self.delta,
            "evidence": None if region is None else region.wealth,
            "evidence_needed": None if threshold is None else self.needed(threshold),
            "answers": None if region is None else region.seen,
            "nearest": self.nearest() if threshold is None else None,
            "handed_over": self.handed_over,
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "thresholds": list(self.thresholds),
            "tests": [vars(t).copy() for t in self.tests],
            "requests": self.requests,
            "handed_over": self.handed_over,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any] | None, alpha: float, delta: float = DELTA, floor: float = 0.05
    ) -> Certifier:
        """The saved certifier. A region saved for this bound keeps its evidence; any other starts
        fresh (evidence about another bound proves nothing about this one)."""
        fresh = cls(alpha, delta, floor=floor)
        if not state:
            return fresh
        saved = {
            threshold: BettingTest(**test)
            for threshold, test in zip(state.get("thresholds", []), state.get("tests", []), strict=False)
            if test.get("alpha") == alpha and test.get("delta") == delta
        }
        if not saved:
            return fresh
        tests = [saved.get(t, test) for t, test in zip(fresh.thresholds, fresh.tests, strict=True)]
        # A share once handed on stays handed on. A state saved before handovers existed has no count,
        # and one with other regions cannot say which were empty: for them the handover's request is past.
        handed_over = bool(state.get("handed_over", False))
        requests = int(state.get("requests", HANDOVER_AT))
        if len(saved) < len(tests) or list(state.get("thresholds", [])) != list(fresh.thresholds):
            requests = max(requests, HANDOVER_AT)
        return cls(alpha, delta, fresh.thresholds, tests, floor=floor, requests=requests, handed_over=handed_over)


def audit_interval(bad: int, n: int, delta: float = DELTA) -> tuple[float, float]:
    """A 1 - delta confidence sequence for a rate from ``bad`` in ``n``: valid at every n at once.

    The beta-binomial mixture with a uniform prior: for each rate r, the mixture's likelihood ratio
    against r is a martingale under r, and r is excluded once it passes 1/delta."""
    if n == 0:
        return 0.0, 1.0
    log_mix = betaln(1 + bad, 1 + n - bad)  # log of the uniform mixture's likelihood (B(1,1) = 1)
    threshold = math.log(1 / delta)

    def excess(r: float) -> float:  # log ratio minus the threshold: positive means r is excluded
        return log_mix - _log_likelihood(r, bad, n) - threshold

    edge = 1e-12
    mle = min(max(bad / n, edge), 1 - edge)  # the likelihood's peak, kept off 0 and 1
    low = 0.0 if excess(edge) <= 0 else brentq(excess, edge, mle)
    high = 1.0 if excess(1 - edge) <= 0 else brentq(excess, mle, 1 - edge)
    return float(low), float(high)


def _log_likelihood(r: float, bad: int, n: int) -> float:
    return (bad * math.log(r) if bad else 0.0) + (n - bad) * math.log1p(-r)
