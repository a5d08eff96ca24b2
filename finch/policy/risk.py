"""Keeping the bad-local rate under the user's bound.

Two uses of the same statistics:

* ``clopper_pearson``: an exact binomial confidence interval for a rate from k bad in n. The audits
  (sampled forwards of would-be-local answers, judged against Claude's answer) give the estimate of
  the true bad-local rate and its 95% interval shown in `finch stats` and `/metrics`.
* ``choose_threshold``: the validator's operating point. From recent judged attempts (the
  validator's score on each local attempt, made before it learned from that example, and whether
  the judge found the attempt good), the lowest score threshold whose one-sided 95% upper bound on
  the bad rate among attempts above it stays under the bound. With too few attempts no threshold
  qualifies, and finch keeps forwarding.

Judged attempts come from forwarded requests only, and above the operating point only the sampled
forwards are seen: each stands for 1/s served answers. Attempts therefore carry weights (inverse
probability of being seen), and the bound uses the weighted rate with Kish's effective sample size,
so a few heavy samples are not mistaken for many.
"""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import beta


def clopper_pearson(bad: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact interval for bad/n."""
    if n == 0:
        return 0.0, 1.0
    alpha = 1 - confidence
    low = 0.0 if bad == 0 else float(beta.ppf(alpha / 2, bad, n - bad + 1))
    high = 1.0 if bad == n else float(beta.ppf(1 - alpha / 2, bad + 1, n - bad))
    return low, high


def upper_bound(bad: int, n: int, confidence: float = 0.95) -> float:
    """One-sided exact upper bound for bad/n."""
    if n == 0:
        return 1.0
    if bad >= n:
        return 1.0
    return float(beta.ppf(confidence, bad + 1, n - bad))


def weighted_upper_bound(bad_weight: float, weight: float, weight_sq: float, confidence: float = 0.95) -> float:
    """``upper_bound`` for weighted observations: the weighted bad rate at the effective sample size."""
    if weight <= 0:
        return 1.0
    n = weight * weight / weight_sq  # Kish: equal weights give n back
    bad = n * bad_weight / weight
    if bad >= n:
        return 1.0
    return float(beta.ppf(confidence, bad + 1, n - bad))


def choose_threshold(
    scores: Sequence[float],
    good: Sequence[bool],
    max_bad: float,
    floor: float = 0.5,
    confidence: float = 0.95,
    weights: Sequence[float] | None = None,
) -> float | None:
    """The lowest threshold t ≥ ``floor`` whose upper bound on the (weighted) bad rate among
    scores ≥ t is at most ``max_bad``, or None."""
    weights = [1.0] * len(scores) if weights is None else weights
    ranked = sorted(zip(scores, good, weights, strict=True), key=lambda x: -x[0])
    best: float | None = None
    total = total_sq = bad = 0.0
    for i, (score, is_good, w) in enumerate(ranked):  # sweep the threshold downwards
        if score < floor:
            break
        total += w
        total_sq += w * w
        bad += 0.0 if is_good else w
        tie_continues = i + 1 < len(ranked) and ranked[i + 1][0] == score
        if not tie_continues and weighted_upper_bound(bad, total, total_sq, confidence) <= max_bad:
            best = score
    return best


# Router cuts tried when choosing the operating point: its floor, up to the conservative rule's.
ROUTER_CUTS = (0.5, 0.7, 0.8, 0.9, 0.95)


def choose_operating_point(
    router: Sequence[float],
    validator: Sequence[float],
    good: Sequence[bool],
    max_bad: float,
    weights: Sequence[float] | None = None,
    router_cuts: Sequence[float] = ROUTER_CUTS,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """The (router cut, validator threshold) pair that serves the most (weighted) attempts while the
    upper bound on their bad rate stays under ``max_bad``, or None when no pair qualifies.

    A stricter router cut can certify a lower validator threshold: the router sees only the
    question, the validator the answer, and their mistakes differ."""
    weights = [1.0] * len(good) if weights is None else weights
    rows = list(zip(router, validator, good, weights, strict=True))
    best: tuple[float, float] | None = None
    best_mass = 0.0
    for cut in router_cuts:
        kept = [r for r in rows if r[0] >= cut]
        if not kept:
            continue
        threshold = choose_threshold(
            [r[1] for r in kept], [r[2] for r in kept], max_bad, confidence=confidence, weights=[r[3] for r in kept]
        )
        if threshold is None:
            continue
        mass = sum(r[3] for r in kept if r[1] >= threshold)
        if mass > best_mass:
            best, best_mass = (cut, threshold), mass
    return best
