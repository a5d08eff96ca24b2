"""The learning benchmark, small: a few hundred real Banking77 questions through the real system.

400 requests are too few to certify a bound (a clean region needs about 200 judged answers that
score in it: BENCHMARKS.md "The bound"), so this checks the learning itself: finch's own local
attempts, judged against Claude's answers, get better, and whatever it serves is consistent with
the bound by the benchmark's truth."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from finch.store.db import read_rows
from tests.datasets import data_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.skipif(data_dir() is None, reason="Banking77 not found beside the repository")
@pytest.mark.slow
@pytest.mark.timeout(600)  # 250-280 s alone on two cores, before and after namespaces: near the default 300
def test_finch_learns_over_a_small_banking77_stream(tmp_path):
    from learning import Truth, exact_cache, finch_run
    from streams import build_stream, reference_answers

    from finch.policy.risk import clopper_pearson

    stream = build_stream("banking77", 400, seed=1, max_intents=8)
    truth = Truth(reference_answers("banking77"))
    finch = finch_run(stream, truth, "banking77", preset="tiny", max_bad_local=0.05, seed=0, keep=tmp_path)
    verdicts = [row["good"] for row in read_rows(tmp_path / "finch.db", "SELECT good FROM learning ORDER BY id")]
    half = len(verdicts) // 2
    first, second = sum(verdicts[:half]) / half, sum(verdicts[half:]) / (len(verdicts) - half)
    print(f"\nfinch's attempts judged good: first half {first:.1%}, second half {second:.1%}")
    assert len(verdicts) >= 0.8 * len(stream) and second > first + 0.05
    served, bad = sum(finch.local), sum(finch.wrong)
    low, _ = clopper_pearson(bad, served)
    print(f"served {served}, wrong by the truth {bad}")
    assert low <= 0.05  # what it served (if anything) is consistent with the bound
    assert sum(exact_cache(stream, truth).local) > 0  # the baseline runs on the same stream
