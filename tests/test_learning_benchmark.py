"""The learning benchmark, small: a few hundred real Banking77 questions through the real system."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.datasets import data_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.skipif(data_dir() is None, reason="Banking77 not found beside the repository")
def test_finch_learns_over_a_small_banking77_stream():
    from learning import Truth, exact_cache, finch_run
    from streams import build_stream, reference_answers

    from finch.policy.risk import clopper_pearson

    stream = build_stream("banking77", 400, seed=1, max_intents=8)
    truth = Truth(reference_answers("banking77"))
    finch = finch_run(stream, truth, "banking77", preset="tiny", max_bad_local=0.02, seed=0)
    half = len(stream) // 2
    first, second = sum(finch.local[:half]) / half, sum(finch.local[half:]) / half
    print(f"\nfinch local share: first half {first:.1%}, second half {second:.1%}")
    assert second > first
    served, bad = sum(finch.local), sum(finch.wrong)
    low, _ = clopper_pearson(bad, served)
    print(f"bad-local: {bad}/{served}, 95% interval from {low:.1%}")
    assert low <= 0.02  # the measured bad-local rate is consistent with the 2% bound
    assert sum(exact_cache(stream, truth).local) > 0  # the baseline runs on the same stream
