"""One region's test of "the bad rate is under the bound", valid however often it is checked.

``BettingTest`` is a test of "the bad rate is below ``alpha``" by betting (Waudby-Smith & Ramdas,
"Estimating means of bounded random variables by betting", 2023). Each observation multiplies a
wealth by ``1 + bet * (alpha - y)``. While the true rate is at least ``alpha`` the wealth is a
nonnegative supermartingale, so by Ville's inequality it ever reaches ``1 / delta`` with
probability at most ``delta``: the test may be looked at after every observation.
Models change, so a region's rate can rise after it was certified. A second bet, the other way,
watches for that: when the evidence that the rate is over ``alpha`` passes its own 1/delta, the
region starts over with a fresh test at a smaller share of delta (0.8 delta, then 0.16 delta, ...,
summing to delta), so restarts never spend more than the one delta the bound promises.

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
(``benchmarks/learning.py --requests 20000`` measures it). Either part may carry the sum over the
mark, so the test as a whole rests on the quick bets' assumption: the even part adds power where
it fails, not validity (``tests/test_bound.py`` shows the quick part fooled where it fails).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Measured by benchmarks/bound.py (any choice keeps the test valid; these make it quick): a clean
# region certifies a 2% bound in about 190 answers, one truly at 0.5% in about 330.
_MAX_BET = 0.8  # of the bet a bad answer would wipe out: one bad answer leaves a fifth of the wealth
_FORGET = 0.995  # the bet's estimate of the bad rate weighs the last few hundred judged answers (models change)
_PRIOR_WEIGHT = 20.0  # answers' worth of prior belief that the rate is a quarter of the bound
_SPEND = 0.2  # epoch j of a region's test gets delta * (1 - _SPEND) * _SPEND**j
# The chance that a certificate is wrong: every bound finch prints holds with 95% confidence.
DELTA = 0.05
_EVEN_SHARE = 0.1  # of a region's wealth at its split, the part put on even bets
_EVEN_FORGET = 0.999  # the even bets' estimate weighs the last thousand answers, judged or served


@dataclass
class BettingTest:
    """Anytime-valid test of H0: bad rate >= ``alpha``; rejected (certified) when the wealth reaches 1/delta."""

    alpha: float
    delta: float = DELTA
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
    # log max(1, wealth) when the empty repeats' region handed its share on (finch.policy.bound): the
    # share given counts only the evidence earned since, so it is staked on no wealth already won
    log_handover: float = 0.0

    def rate_estimate(self) -> float:
        return self._with_prior(self._est_bad, self._est_n)

    def _with_prior(self, bad: float, n: float) -> float:
        """A rate from forgetful sums, drawn toward a quarter of the bound by ``_PRIOR_WEIGHT`` answers."""
        return (bad + _PRIOR_WEIGHT * self.alpha / 4) / (n + _PRIOR_WEIGHT)

    def _stake_under(self, rate: float, p_judged: float) -> float:
        """The capped Kelly stake on "under alpha" at an estimated ``rate``, for an answer judged
        with chance ``p_judged``."""
        fraction = max(0.0, min(_MAX_BET, 1.0 - rate / self.alpha))
        return fraction / (1.0 / p_judged - self.alpha)

    def bet(self, p_judged: float) -> float:
        """The stake on "under alpha" for the next answer, chosen before it is seen (so the test stays
        valid).

        y is 0 or 1/p. The largest bet that keeps the wealth positive is 1 / (1/p - alpha); for a
        true rate m the growth-optimal (Kelly) bet is the fraction 1 - m / alpha of it. m is
        estimated from earlier answers only, and the fraction capped."""
        return self._stake_under(self.rate_estimate(), p_judged)

    def region_rate(self) -> float:
        """The whole region's rate, estimated from every answer weighted by 1/p, as the wealths weigh
        them; noisier than ``rate_estimate`` (one bad audit at 5% moves it by 2 points) but not tilted
        toward the always-judged band below the operating point."""
        return self._with_prior(self._even_y, self._even_n)

    def even_bet(self, p_judged: float) -> float:
        """The stake on "under alpha" sized for the least-judged answer, so the same whatever this
        answer's ``p``. After one bad audit its estimate holds it at zero for a few hundred answers,
        which at this size costs less than the bad audit itself."""
        return self._stake_under(self.region_rate(), min(self.floor, p_judged))

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
        self._learn_rate(bad)
        # The alarm protects against a certified region whose rate rises. In the rise simulation the
        # bets' own wealth, cut to about a fifth by each bad audit, lost the certificate first: with
        # the alarm off as many bad answers were served (benchmarks/guards.py).
        if self.log_alarm >= math.log(1 / self.delta):  # the rate has risen: start over, on less delta
            self.epoch += 1
            self.log_wealth = self.log_alarm = self.log_even = self.seen = self.bad = 0.0
            self.log_handover = 0.0  # a fresh test's wealth starts at 1, after any handover
            self.split = False

    def _learn_rate(self, bad: bool | None) -> None:
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
        return float(np.logaddexp(self.log_wealth, self.log_even)) if self.split else self.log_wealth

    def needed(self, share: float) -> float:
        """The wealth that certifies on ``share`` of delta, in this epoch (restarts get less delta)."""
        return math.inf if share <= 0.0 else 1 / (share * self.delta * (1 - _SPEND) * _SPEND**self.epoch)

    @property
    def wealth(self) -> float:
        return math.exp(min(self.log_total, 700.0))
