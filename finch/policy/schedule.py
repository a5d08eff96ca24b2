"""The learning schedule, as pure functions of how many examples finch has learned from.

Cold start: the first ``cold_start`` examples always forward (nothing local yet); until
``conservative_until`` only a certified operating point of at least ``conservative_p`` on P(good)
may serve. The conservative phase protects against young models under a loose bound, which can
certify within a few dozen answers; at the default 2% no region certifies before it ends, and it
never acted on any stream measured (``benchmarks/guards.py``).

Strategic sampling: a request that would be served locally is forwarded anyway with probability
s(n), so learning and auditing never stop. Every number is a setting, its default
declared once, in finch/config.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from finch.config import Settings, parse_sampling

# (examples learned below which, sampling probability); the last row applies from then on.
DEFAULT_SAMPLING: tuple[tuple[int, float], ...] = parse_sampling(Settings.sampling)


@dataclass(frozen=True)
class Schedule:
    cold_start: int = Settings.cold_start
    conservative_until: int = Settings.conservative_until
    conservative_p: float = Settings.conservative_threshold
    sampling: Sequence[tuple[int, float]] = DEFAULT_SAMPLING

    @classmethod
    def of(cls, settings: Settings) -> Schedule:
        sampling = parse_sampling(settings.sampling)
        return cls(settings.cold_start, settings.conservative_until, settings.conservative_threshold, sampling)

    def phase(self, learned: int) -> str:
        if learned < self.cold_start:
            return "cold_start"
        if learned < self.conservative_until:
            return "conservative"
        return "learned"

    @property
    def floor_rate(self) -> float:
        """The sampling rate the schedule ends on."""
        return self.sampling[-1][1]

    @property
    def lowest_rate(self) -> float:
        """The lowest chance of an audit any would-be-local answer can get (1.0 with sampling off:
        then no served answer counts toward the bound, and every one that does was judged)."""
        return min((rate for _, rate in self.sampling if rate > 0), default=1.0)

    def sample_rate(self, learned: int) -> float:
        for below, rate in self.sampling:
            if learned < below:
                return rate
        return self.sampling[-1][1]
