"""The pure policy: schedule, sampling, the audits, the fixed-sample interval and the safety patterns."""

import pytest

from finch.config import parse_sampling
from finch.errors import ConfigError
from finch.policy.audits import Audits
from finch.policy.risk import clopper_pearson
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


def test_the_tripwire_reads_the_recent_audits_bad_share_against_the_bound():
    """Over the bound means the recent audits' bad share above it, once there are enough audits."""
    for bad, good, over in ((1, 9, False), (2, 18, False), (3, 17, True), (10, 90, False), (11, 89, True)):
        audits = Audits()
        for verdict in [False] * bad + [True] * good:
            audits.record(verdict)
        assert audits.over_bound(0.1) is over, (bad, good)


def test_audits_survive_a_checkpoint_and_begin_a_new_period():
    audits = Audits()
    for verdict in [False] * 5 + [True] * 15:
        audits.record(verdict)
    assert audits.period_beyond(0.02)  # 5 bad of 20: the exact lower bound is over 2%
    restored = Audits(audits.to_state())
    assert restored.summary() == audits.summary() and list(restored.recent) == list(audits.recent)
    assert not restored.period_beyond(0.02)  # the checkpoint began a new period
