"""The learning schedule, as pure functions of how many examples finch has learned from.

Cold start: the first ``cold_start`` examples always forward (nothing local yet); until
``conservative_until`` (and later, whenever too few judged attempts exist to calibrate a threshold)
a local answer needs both the router and the validator above ``conservative_p``.
Strategic sampling: a request that would be served locally is forwarded anyway with probability
s(n), so learning and auditing never stop. Defaults follow DESIGN.md; every number is a setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# (examples learned below which, sampling probability); the last row applies from then on.
DEFAULT_SAMPLING: tuple[tuple[int, float], ...] = ((100, 0.5), (500, 0.2), (2000, 0.1), (2**62, 0.05))


@dataclass(frozen=True)
class Schedule:
    cold_start: int = 50
    conservative_until: int = 200
    conservative_p: float = 0.95
    sampling: Sequence[tuple[int, float]] = DEFAULT_SAMPLING

    def phase(self, learned: int) -> str:
        if learned < self.cold_start:
            return "cold_start"
        if learned < self.conservative_until:
            return "conservative"
        return "learned"

    def sample_rate(self, learned: int) -> float:
        for below, rate in self.sampling:
            if learned < below:
                return rate
        return self.sampling[-1][1]
