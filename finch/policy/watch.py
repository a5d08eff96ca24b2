"""The served answers, watched through finch's own coin: audits that rise where a certificate is
new, and again after a bad audit.

The bound's tests (``finch.policy.bound``) certify a region on the evidence of every judged answer
in it since it began. That holds for a rate that stays put, but after a long clean stretch a
region's wealth can pay for hundreds of answers at a worse rate before the certificate falls
(traffic changes, a new model upstream): at 5% audits the first sign of a rise to 5% comes one
bad audit in 400 served answers.

**Audits at stake.** The n-th answer served since finch last had reason to doubt (its first
certificate, or the last bad audit) is audited with chance at least ``stake / (n + stake)``: every
answer at first, falling to the schedule's rate as the served answers prove themselves. A rise
after n clean answers is then seen within about ``n / stake`` answers' worth of audits, and each
bad audit it brings cuts the region's wealth (``finch.policy.betting``), so the harm stays a
fraction of the clean answers served before it. The chance is set before each answer is seen, and
audits are weighted by 1 / chance, so the tests stay valid.

Not a theorem about the harm: ``benchmarks/bound.py --rise`` and ``--drift`` measure it, with the
cost on steady traffic and on the learning streams (BENCHMARKS.md, "Through change"; on chat, 8
points of the last quarter). Variants measured there and not kept: counting anew at every looser
operating point, withdrawing the certificate at the first bad audit, and leaving Claude's repeated
answers out of it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Measured in benchmarks/bound.py (BENCHMARKS.md, "Through change"): after a rise from 0.2% to 5%, a
# third or less of the bad answers served without it; on a steady 0.5% stream, 1-3 points of share.
STAKE = 50.0


@dataclass
class Watch:
    stake: float = STAKE  # 0 switches the audits at stake off
    served: int = 0  # answers at the operating point (served or audited) since the last bad audit

    def audit_chance(self, scheduled: float) -> float:
        """The chance that the next answer at the operating point is audited."""
        at_stake = self.stake / (self.served + self.stake) if self.stake > 0 else 0.0
        return max(scheduled, min(1.0, at_stake))

    def observe(self, bad: bool | None) -> None:
        """One answer at the operating point, judged (``bad``) or served unjudged (None)."""
        self.served = 0 if bad else self.served + 1

    def to_state(self) -> dict[str, int]:
        return {"served": self.served}

    @classmethod
    def from_state(cls, state: dict[str, int] | None, stake: float = STAKE) -> Watch:
        return cls(stake, int((state or {}).get("served", 0)))
