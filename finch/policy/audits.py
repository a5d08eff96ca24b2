"""The audits' verdicts on would-be-local answers, kept three ways: all of them (what ``finch stats``
reports), the last hundred (the conservative phase's tripwire), and those since the last checkpoint
(whether to roll the models back). Counts only: no torch."""

from __future__ import annotations

from collections import deque
from typing import Any

from finch.policy.bound import audit_interval
from finch.policy.risk import clopper_pearson

RECENT = 100  # audits the tripwire answers to
_TRIPWIRE_MIN = 20  # fewer say too little to stop local answers on


class Audits:
    def __init__(self, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self.total: dict[str, int] = dict(state.get("audits", {"good": 0, "bad": 0}))
        self.recent: deque[bool] = deque(state.get("recent_audits", []), maxlen=RECENT)
        # Since the last checkpoint: the audited quality of the models trained since then.
        self.period: dict[str, int] = dict(state.get("period_audits", {"good": 0, "bad": 0}))

    def record(self, good: bool) -> None:
        verdict = "good" if good else "bad"
        self.total[verdict] += 1
        self.period[verdict] += 1
        self.recent.append(good)

    def over_bound(self, max_bad: float) -> bool:
        """Is the recent audits' bad share above the bound?

        A tripwire for the conservative phase, while the models change fastest: the audits'
        estimate is taken at its word, and more than the bound's share bad among the last hundred
        stops local answers until they clear. It can only forward more, so it never weakens the
        certified bound. It protects against models that turn bad early, under a loose bound: at a
        2% bound no region certifies before the phase ends, so there are no audits for it to read
        and it never acted on any stream measured (``benchmarks/guards.py``)."""
        n = len(self.recent)
        return n >= _TRIPWIRE_MIN and self.recent.count(False) > max_bad * n

    def period_beyond(self, max_bad: float, min_audits: int = 20) -> bool:
        """Have the audits since the last checkpoint shown the models serving bad answers beyond the
        bound: the exact 95% lower bound of their bad rate above ``max_bad``?"""
        bad, n = self.period["bad"], self.period["good"] + self.period["bad"]
        return n >= min_audits and clopper_pearson(bad, n)[0] > max_bad

    def new_period(self) -> None:
        self.period = {"good": 0, "bad": 0}

    def to_state(self) -> dict[str, Any]:
        """For the checkpoint, which begins a new period."""
        return {"audits": self.total, "recent_audits": list(self.recent), "period_audits": {"good": 0, "bad": 0}}

    def summary(self) -> dict[str, Any]:
        n, bad = self.total["good"] + self.total["bad"], self.total["bad"]
        low, high = audit_interval(bad, n)
        return {
            "audits": n,
            "audits_bad": bad,
            "bad_local_estimate": bad / n if n else None,
            "bad_local_interval": [low, high],
        }
