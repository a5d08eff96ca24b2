"""The pure policy: schedule, sampling, the bad-local bound and the safety patterns."""

import random

import pytest

from finch.config import parse_sampling
from finch.errors import ConfigError
from finch.policy.risk import choose_threshold, clopper_pearson, upper_bound
from finch.policy.safety import sensitive_topic
from finch.policy.schedule import Schedule


def test_cold_start_and_conservative_phases_hold_as_specified():
    schedule = Schedule()
    assert [schedule.phase(n) for n in (0, 49, 50, 199, 200, 10_000)] == [
        "cold_start", "cold_start", "conservative", "conservative", "learned", "learned",
    ]  # fmt: skip


def test_sampling_falls_from_half_to_five_percent():
    schedule = Schedule()
    assert [schedule.sample_rate(n) for n in (0, 99, 100, 499, 500, 1999, 2000, 10**6)] == [
        0.5, 0.5, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05,
    ]  # fmt: skip


def test_sampling_table_parses_and_rejects_nonsense():
    assert parse_sampling("10:0.3, *:0") == ((10, 0.3), (2**62, 0.0))
    for bad in ("", "10:2", "ten:0.1", "10"):
        with pytest.raises(ConfigError):
            parse_sampling(bad)


def test_clopper_pearson_matches_known_values():
    low, high = clopper_pearson(0, 150)
    assert low == 0.0 and high == pytest.approx(0.0243, abs=1e-4)
    low, high = clopper_pearson(3, 100)
    assert low == pytest.approx(0.0062, abs=1e-4) and high == pytest.approx(0.0852, abs=1e-4)
    assert upper_bound(0, 150) < 0.02 < upper_bound(0, 100)  # 150 clean audits certify a 2% bound


def test_threshold_is_the_lowest_that_keeps_the_bound():
    rng = random.Random(0)
    # Scores above 0.9 are always good; between 0.6 and 0.9 one in five is bad.
    scores, good = [], []
    for _ in range(2000):
        s = rng.uniform(0.5, 1.0)
        scores.append(s)
        good.append(s > 0.9 or rng.random() > 0.2)
    t = choose_threshold(scores, good, max_bad=0.02)
    assert t is not None and 0.8 < t < 0.91
    above = [g for s, g in zip(scores, good, strict=True) if s >= t]
    assert upper_bound(above.count(False), len(above)) <= 0.02


def test_too_few_attempts_give_no_threshold():
    assert choose_threshold([0.99] * 50, [True] * 50, max_bad=0.02) is None
    assert choose_threshold([], [], max_bad=0.02) is None


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("I want to kill myself", "self_harm"),
        ("thinking about suicide lately", "self_harm"),
        ("how do I build a bomb to attack people", "violence"),
        ("my partner abused me last night", "abuse"),
        ("my dad has chest pain and can't breathe", "medical_emergency"),
        ("I've been arrested, what do I say", "legal_emergency"),
        ("How do I reset my password?", None),
        ("What is the exchange rate for euros?", None),
    ],
)
def test_sensitive_topics(text, topic):
    assert sensitive_topic(text) == topic


def test_weighted_bound_counts_heavy_samples_as_few():
    # Equal weights change nothing.
    scores = [0.99] * 200 + [0.7] * 200
    good = [True] * 200 + [True] * 190 + [False] * 10
    assert choose_threshold(scores, good, 0.02, weights=[1.0] * 400) == choose_threshold(scores, good, 0.02)
    # 40 clean sampled forwards, each standing for 20 served answers, are still 40 observations:
    # not enough to certify a 2% bound. 800 clean observations of weight 1 are.
    assert choose_threshold([0.99] * 40, [True] * 40, 0.02, weights=[20.0] * 40) is None
    assert choose_threshold([0.99] * 800, [True] * 800, 0.02, weights=[1.0] * 800) == 0.99
    # Where finch serves, only samples are seen; one bad sample there stands for 20 bad answers.
    scores = [0.99] * 100 + [0.8] * 900
    good = [False] + [True] * 999
    weights = [20.0] * 100 + [1.0] * 900
    assert choose_threshold(scores, good, 0.02) == 0.8
    assert choose_threshold(scores, good, 0.02, weights=weights) is None


def test_a_stricter_router_cut_certifies_what_the_validator_alone_cannot():
    from finch.policy.risk import choose_operating_point

    rng = random.Random(1)
    router, validator, good = [], [], []
    for _ in range(3000):
        r, v = rng.random(), rng.uniform(0.5, 1.0)
        router.append(r)
        validator.append(v)
        # Confident questions are answered well; doubtful ones badly one time in ten, whatever the validator says.
        good.append(r >= 0.8 or rng.random() > 0.1)
    assert choose_threshold(validator, good, 0.02) is None
    cut, threshold = choose_operating_point(router, validator, good, 0.02)
    assert cut == 0.8 and threshold < 0.55
    assert choose_operating_point(router, validator, [False] * 3000, 0.02) is None
