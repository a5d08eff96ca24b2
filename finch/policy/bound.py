"""The bad-local bound, valid however often finch checks it.

finch checks its bound after every judged answer, at every threshold, for as long as it runs. A
fixed-sample interval (Clopper-Pearson) re-checked that way certifies a region that is truly at the
bound about a quarter of the time, not 5% (``benchmarks/bound.py`` measures it). Two anytime-valid
tools replace it:

* ``BettingTest``: a test of "the bad rate is below ``alpha``" by betting (Waudby-Smith & Ramdas,
  "Estimating means of bounded random variables by betting", 2023). Each observation multiplies a
  wealth by ``1 + bet * (alpha - y)``. While the true rate is at least ``alpha`` the wealth is a
  nonnegative supermartingale, so by Ville's inequality it ever reaches ``1 / delta`` with
  probability at most ``delta``: the test may be looked at after every observation.
  Models change, so a region's rate can rise after it was certified. A second bet, the other way,
  watches for that: when the evidence that the rate is over ``alpha`` passes its own 1/delta, the
  region starts over with a fresh test at a smaller share of delta (0.8 delta, then 0.16 delta, ...,
  summing to delta), so restarts never spend more than the one delta the bound promises.
* ``Certifier``: one such test per region of a sequence of nested regions, strictest first, tested
  by the fallback procedure (Wiens, 2003), Learn-then-Test's fixed-sequence testing with delta spread
  over the first few regions instead of staked on the first alone. Each region starts with its
  share of delta (``WEIGHTS``); a certified region passes everything it has on to the next one. So
  a clean sequence certifies on (almost) the whole delta, as fixed-sequence testing would, while a
  strictest region that is rare (Claude's repeated answers, on traffic that does not repeat) or
  that holds a few bad answers no longer blocks every region after it.
  It is valid at every look: a false certification needs some truly-bad region's test to cross
  1/(its share), and the shares a truly-bad region can ever hold (its own, plus those of the
  truly-good regions just before it) add up over all truly-bad regions to at most delta.

Observations are weighted by inverse probability. A served local answer is judged only when it is
sampled for an audit (with probability ``p``), so an audit stands for ``1 / p`` answers: a bad audit
enters as ``y = 1 / p``, and a served answer that was not audited enters as ``y = 0``. A forward that
was never going to be served is always judged (``p = 1``). The mean of ``y`` is the bad rate either
way, and the bet is capped so that the wealth can never go negative.

Each region's wealth is a portfolio of two kinds of bets:

* quick bets, sized for each answer's own ``p``: an always-judged forward is staked twenty times
  an answer audited at 5%. ``p`` follows from the answer's score (served above the operating
  point, forwarded below it), so in a region looser than the point these bets read mostly the
  forwarded band just under it. They are valid while answers scoring higher are no worse;
* even bets, sized for the least-judged answer any region can hold (``floor``, the sampling
  schedule's lowest rate) and the same for every answer, so they read the whole region's rate.
  They earn about a twentieth of what a clean forward earns the quick bets.

Until a region holds an answer that might go unjudged, every answer in it is judged and the two
kinds are the same bet: the wealth is all quick bets. At that answer it is split, before the
answer's verdict is known: ``_EVEN_SHARE`` of it goes on even bets from then on, the rest on quick
bets. The region's wealth is the sum of the two parts, a nonnegative supermartingale while the rate
is at least ``alpha``, so Ville's inequality holds for it as for one bet. So a region's first
certificate costs nothing more, and on a long run, where a looser region's forwarded band is worse
than the region (the quick part sinks there), the even part lets the operating point go down to
the loosest region whose answers, all together, are under the bound
(``benchmarks/learning.py --requests 20000`` measures it).

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

# Measured by benchmarks/bound.py (any choice keeps the test valid; these make it quick): a clean
# region certifies a 2% bound in about 190 answers, one truly at 0.5% in about 330.
_MAX_BET = 0.8  # of the bet a bad answer would wipe out: one bad answer leaves a fifth of the wealth
_FORGET = 0.995  # the bet's estimate of the bad rate weighs the last few hundred judged answers (models change)
_PRIOR_WEIGHT = 20.0  # answers' worth of prior belief that the rate is a quarter of the bound
_SPEND = 0.2  # epoch j of a region's test gets delta * (1 - _SPEND) * _SPEND**j
_EVEN_SHARE = 0.1  # of a region's wealth at its split, the part put on even bets
_EVEN_FORGET = 0.999  # the even bets' estimate weighs the last thousand answers, judged or served


@dataclass
class BettingTest:
    """Anytime-valid test of H0: bad rate >= ``alpha``; rejected (certified) when the wealth reaches 1/delta."""

    alpha: float
    delta: float = 0.05
    log_wealth: float = 0.0  # evidence that the rate is under alpha, since this epoch began
    log_alarm: float = 0.0  # evidence that it is over alpha, since this epoch began
    epoch: int = 0  # restarts so far
    seen: float = 0.0  # answers observed this epoch (served ones included)
    bad: float = 0.0  # inverse-probability-weighted bad answers this epoch
    floor: float = 0.05  # the lowest chance of being judged that any answer can have (the even bets' size)
    split: bool = False  # has the wealth been split between quick and even bets (see above)?
    log_even: float = 0.0  # once split, the log of the even bets' part; log_wealth is then the quick bets' part
    _est_bad: float = 0.0  # forgetful sums over judged answers behind the quick bets' estimate of the rate
    _est_n: float = 0.0
    _even_y: float = 0.0  # forgetful sums over every answer's y behind the even bets' estimate
    _even_n: float = 0.0

    def rate_estimate(self) -> float:
        return (self._est_bad + _PRIOR_WEIGHT * self.alpha / 4) / (self._est_n + _PRIOR_WEIGHT)

    def bet(self, p_judged: float) -> float:
        """The stake on "under alpha" for the next answer, chosen before it is seen (so the test stays
        valid).

        y is 0 or 1/p. The largest bet that keeps the wealth positive is 1 / (1/p - alpha); for a
        true rate m the growth-optimal (Kelly) bet is the fraction 1 - m / alpha of it. m is
        estimated from earlier answers only, and the fraction capped."""
        fraction = max(0.0, min(_MAX_BET, 1.0 - self.rate_estimate() / self.alpha))
        return fraction / (1.0 / p_judged - self.alpha)

    def region_rate(self) -> float:
        """The whole region's rate, estimated from every answer weighted by 1/p, as the wealths weigh
        them; noisier than ``rate_estimate`` (one bad audit at 5% moves it by 2 points) but not tilted
        toward the always-judged band below the operating point."""
        return (self._even_y + _PRIOR_WEIGHT * self.alpha / 4) / (self._even_n + _PRIOR_WEIGHT)

    def even_bet(self, p_judged: float) -> float:
        """The stake on "under alpha" sized for the least-judged answer, so the same whatever this
        answer's ``p``. After one bad audit its estimate holds it at zero for a few hundred answers,
        which at this size costs less than the bad audit itself."""
        fraction = max(0.0, min(_MAX_BET, 1.0 - self.region_rate() / self.alpha))
        return fraction / (1.0 / min(self.floor, p_judged) - self.alpha)

    def alarm_bet(self, p_judged: float) -> float:
        """The stake on "over alpha": the Kelly bet (m - alpha) / (alpha (1/p - alpha)), capped below the
        largest safe one, 1/alpha. m is the whole region's rate: the judged answers' mean would lean on
        an always-judged band below the operating point and sound the alarm on a region under the
        bound. (The alarm's bets need no care for validity: a false alarm spends delta, never adds it.)"""
        kelly = (self.region_rate() - self.alpha) / (self.alpha * (1.0 / p_judged - self.alpha))
        return max(0.0, min(_MAX_BET / self.alpha, kelly))

    def observe(self, bad: bool | None, p_judged: float = 1.0) -> None:
        """One answer in the region: ``bad`` is the verdict, None when it was served unjudged."""
        if not 0.0 < p_judged <= 1.0:
            raise ValueError(f"p_judged must be in (0, 1], got {p_judged}")
        y = 1.0 / p_judged if bad else 0.0
        if not self.split and p_judged < 1.0:  # the first answer that might go unjudged: split first
            self.split = True
            self.log_even = self.log_wealth + math.log(_EVEN_SHARE)
            self.log_wealth += math.log1p(-_EVEN_SHARE)
        self.log_wealth += math.log1p(self.bet(p_judged) * (self.alpha - y))
        if self.split:
            self.log_even += math.log1p(self.even_bet(p_judged) * (self.alpha - y))
        self._even_y = _EVEN_FORGET * self._even_y + y
        self._even_n = _EVEN_FORGET * self._even_n + 1
        if self.certified:  # the alarm only has a certificate to withdraw
            self.log_alarm += math.log1p(self.alarm_bet(p_judged) * (y - self.alpha))
        self.seen += 1
        self.bad += y
        self._learn_rate(bad, y)
        if self.log_alarm >= math.log(1 / self.delta):  # the rate has risen: start over, on less delta
            self.epoch += 1
            self.log_wealth = self.log_alarm = self.log_even = self.seen = self.bad = 0.0
            self.split = False

    def _learn_rate(self, bad: bool | None, y: float) -> None:
        """The bets' estimate of the rate reads the judged answers alone, each counted once.

        An audit is a fair sample of the answers served (its chance is set before the answer is
        seen), so their plain mean estimates the rate. Weighing an audit by 1/p, as the wealth must,
        would make one bad audit at p = 0.1 count as ten bad answers in the estimate: it would stay
        over alpha, and the bet at zero, for the next 160 answers, so a region that lost its
        certificate to one bad audit could not earn it back for hundreds of requests."""
        if bad is None:
            return
        self._est_bad = _FORGET * self._est_bad + bad
        self._est_n = _FORGET * self._est_n + 1

    @property
    def certified(self) -> bool:
        return self.passes(1.0)

    def passes(self, share: float) -> bool:
        """Certified on ``share`` of delta (the part this region holds in the fallback procedure)?"""
        return share > 0.0 and self.log_total >= math.log(self.needed(share))

    @property
    def log_total(self) -> float:
        """The region's wealth, both parts together, on a log scale."""
        if not self.split:
            return self.log_wealth
        high, low = max(self.log_wealth, self.log_even), min(self.log_wealth, self.log_even)
        return high + math.log1p(math.exp(low - high))

    def needed(self, share: float) -> float:
        """The wealth that certifies on ``share`` of delta, in this epoch (restarts get less delta)."""
        return math.inf if share <= 0.0 else 1 / (share * self.delta * (1 - _SPEND) * _SPEND**self.epoch)

    @property
    def wealth(self) -> float:
        return math.exp(min(self.log_total, 700.0))


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


# What the printed bound is over (finch stats, the dashboard).
BOUND_OVER = "local answers served at the operating point (P(good) >= threshold), audited or not"


@dataclass
class Certifier:
    """The fallback procedure over nested regions ``score >= t``, strictest ``t`` first."""

    alpha: float
    delta: float = 0.05
    thresholds: Sequence[float] = THRESHOLDS
    tests: list[BettingTest] = field(default_factory=list)
    weights: Sequence[float] = WEIGHTS  # shares of delta, strictest first; (1.0,) is fixed-sequence testing
    floor: float = 0.05  # the lowest chance of being judged that any answer can have (the sampling's lowest rate)

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

    def shares(self) -> list[float]:
        """Each region's share of delta now: its own, plus what the certified regions just before it
        passed on."""
        shares, carried = [], 0.0
        for i, test in enumerate(self.tests):
            share = carried + (self.weights[i] if i < len(self.weights) else 0.0)
            shares.append(share)
            carried = share if test.passes(share) else 0.0  # a failing region passes nothing on
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
        }

    def to_state(self) -> dict[str, Any]:
        return {"thresholds": list(self.thresholds), "tests": [vars(t).copy() for t in self.tests]}

    @classmethod
    def from_state(
        cls, state: dict[str, Any] | None, alpha: float, delta: float = 0.05, floor: float = 0.05
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
        tests = [saved.get(t, test) for t, test in zip(fresh.thresholds, fresh.tests, strict=True)]
        return cls(alpha, delta, fresh.thresholds, tests, floor=floor)


def audit_interval(bad: int, n: int, delta: float = 0.05) -> tuple[float, float]:
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
