"""The served answers, watched: audits that rise where a certificate is new, and again after a bad
audit (``finch.policy.watch``)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from finch.config import Settings
from finch.conversation import Conversation
from finch.learning.ensemble import Ensemble
from finch.policy.decide import Attempt, Candidate, Decision, Source
from finch.policy.watch import Watch
from finch.vocabulary import Reason, Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bound import serve  # noqa: E402

ALPHA = 0.02


def test_a_new_certificate_is_audited_closely_and_less_as_it_proves_itself():
    watch = Watch(stake=50)
    assert watch.audit_chance(0.05) == 1.0  # the first answer served: always audited
    for _ in range(50):
        assert not watch.observe(None)
    assert watch.audit_chance(0.05) == pytest.approx(0.5)
    for _ in range(950):
        watch.observe(False)
    assert watch.audit_chance(0.05) == 0.05  # the schedule's rate, once the answers have proved themselves
    assert watch.audit_chance(0.2) == 0.2  # never less than the schedule's
    assert Watch(stake=0).audit_chance(0.05) == 0.05  # switched off: the schedule alone


def test_a_bad_audit_starts_the_count_over():
    watch = Watch(stake=50, served=500)
    watch.observe(None)
    assert watch.served == 501
    watch.observe(True)
    assert watch.served == 0 and watch.audit_chance(0.05) == 1.0
    assert Watch.from_state(watch.to_state(), 50) == watch


@pytest.mark.slow
def test_the_watch_keeps_false_certifications_under_delta():
    # A rate at the bound, every region alike, finch's sampling, with and without the watch: it
    # may only take certificates away.
    rng = np.random.default_rng(11)
    certified = sum(serve(rng.random(2000) < ALPHA, rng, stake=50.0)[1] is not None for _ in range(150))
    assert certified / 150 <= 0.05


def test_after_a_rise_the_watch_serves_far_fewer_bad_answers():
    rng = np.random.default_rng(5)
    bad_after = {None: [], 50.0: []}
    for _ in range(12):
        rates = np.where(np.arange(3000) < 1500, 0.002, 0.05)
        bad = rng.random(3000) < rates
        for stake in bad_after:
            served, _ = serve(bad, np.random.default_rng(int(rng.integers(1 << 30))), stake=stake)
            bad_after[stake].append(int((served[1500:] & bad[1500:]).sum()))
    assert np.median(bad_after[50.0]) * 2 < np.median(bad_after[None])


def ask(text):
    return Conversation("", (("user", text),))


def test_the_trainer_audits_a_new_certificate_closely_and_again_after_a_bad_audit(tmp_path):
    config = Settings(home=tmp_path, preset="tiny", max_bad_local=0.1, cold_start=1, conservative_until=1)
    ensemble = Ensemble(config)
    capital = ask("What is the capital of France?")
    for _ in range(80):
        ensemble.learn_from_claude(capital, "The capital of France is Paris.")
        if ensemble.threshold is not None:
            break
    point = ensemble.threshold
    assert point is not None
    assert ensemble.standing.repeat_sample_rate == 1.0  # a new certificate: its first answer is audited
    assert ensemble.standing.sample_rate == 1.0

    served = Attempt((Candidate("The capital of France is Paris.", Source.REPEAT, 1.0),), None, 0, 1.0)
    for _ in range(50):
        ensemble.count_served(Decision(Route.LOCAL, Reason.REPEAT, served))
    assert ensemble.standing.repeat_sample_rate == pytest.approx(0.5)  # less as it proves itself

    wrong = Attempt((Candidate("The capital of France is Lyon.", Source.REPEAT, 1.0),), None, 0, 0.5)
    judged = ensemble.learn_from_claude(
        capital, "The capital of France is Paris.", Decision(Route.FORWARD, Reason.SAMPLED, wrong)
    )
    assert judged.audit_good is False
    assert ensemble.standing.repeat_sample_rate == 1.0  # watched closely again
    ensemble.save()
    assert Ensemble(config).watch == ensemble.watch  # it survives a restart
