"""An exact interval for a rate counted once, at a sample size fixed in advance.

``clopper_pearson`` is right for a figure computed once: a benchmark's bad-local rate over a whole
run, or the rollback test's audits since the last checkpoint. It is wrong for a bound re-checked after
every answer; that is ``finch.policy.bound``'s job.
"""

from __future__ import annotations

from scipy.stats import beta


def clopper_pearson(bad: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact interval for bad/n."""
    if n == 0:
        return 0.0, 1.0
    alpha = 1 - confidence
    low = 0.0 if bad == 0 else float(beta.ppf(alpha / 2, bad, n - bad + 1))
    high = 1.0 if bad == n else float(beta.ppf(1 - alpha / 2, bad + 1, n - bad))
    return low, high
