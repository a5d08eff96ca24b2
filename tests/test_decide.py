"""The policy routes from scores alone: no models, no torch."""

import json
import subprocess
import sys
from dataclasses import replace

from finch.policy.bound import Certifier
from finch.policy.decide import Attempt, Candidate, Standing, before_models, choose, first_passing

LEARNED = Standing("learned", 0.9, 0.1, False)
NEVER = lambda: 0.99  # noqa: E731  (a draw that never samples an audit)
ALWAYS = lambda: 0.0  # noqa: E731


def attempt(*scores: tuple[str, float], source: str = "recalled") -> Attempt:
    return Attempt(tuple(Candidate(text, source, p, p_validator=p / 2) for text, p in scores), p_router=0.9)


def test_policy_never_imports_torch() -> None:
    code = "import sys, finch.policy.decide, finch.policy.bound; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_what_is_known_before_the_models_forwards_with_its_reason() -> None:
    assert before_models(Standing("cold_start", None, 1.0, False), blocked=False, varies=False).reason == "cold_start"
    assert before_models(LEARNED, blocked=True, varies=False).reason == "feedback_forward"
    assert before_models(LEARNED, blocked=False, varies=True).reason == "answers_vary"
    assert before_models(Standing("learned", None, 0.1, False), blocked=False, varies=False).reason == "uncertified"
    assert before_models(LEARNED, blocked=False, varies=False) is None


def test_the_first_candidate_that_passes_is_served_not_the_best() -> None:
    assert first_passing([0.5, 0.95, 0.99], 0.9) == 1
    assert first_passing([0.5, 0.8], 0.9) is None
    assert first_passing([0.99], None) is None
    decision = choose(attempt(("recalled", 0.92), ("written", 0.99)), LEARNED, NEVER)
    assert (decision.route, decision.reason, decision.answer, decision.p_good) == ("local", "local", "recalled", 0.92)
    assert decision.p_validator == 0.46 and decision.p_router == 0.9
    assert decision.attempt is not None and decision.attempt.audit_chance == 0.1
    assert [c.text for c in decision.attempt.candidates] == ["recalled", "written"]


def test_under_the_operating_point_the_best_is_kept_for_the_record() -> None:
    decision = choose(attempt(("recalled", 0.6), ("written", 0.8)), LEARNED, NEVER)
    assert (decision.route, decision.reason, decision.answer, decision.p_good) == (
        "forward",
        "validator_reject",
        "written",
        0.8,
    )
    assert choose(attempt(), LEARNED, NEVER).reason == "local_too_long"  # no servable candidate


def test_claude_s_repeated_answer_is_served_as_a_repeat_and_audited_at_its_own_rate() -> None:
    decision = choose(attempt(("Paris.", 1.0), source="repeat"), LEARNED, NEVER)
    assert (decision.route, decision.reason) == ("local", "repeat")
    assert decision.attempt is not None and decision.attempt.audit_chance == LEARNED.repeat_sample_rate


def test_a_would_be_local_answer_is_audited_at_the_sampling_rate_or_when_over_bound() -> None:
    assert choose(attempt(("a", 0.95)), LEARNED, ALWAYS).reason == "sampled"
    tripped = Standing("conservative", 0.95, 0.5, True)
    assert choose(attempt(("a", 0.99)), tripped, NEVER).reason == "over_bound"
    assert choose(attempt(("a", 0.99)), Standing("learned", 0.95, 0.5, True), NEVER).reason == "local"


def test_an_attempt_survives_the_log() -> None:
    logged = replace(attempt(("recalled", 0.92), ("written", 0.99)), chosen=1, audit_chance=0.2)
    assert Attempt.from_json(json.loads(json.dumps(logged.to_json()))) == logged
    assert logged.options([True, None]) == [(0.92, True), (0.99, None)]


def test_the_certifier_counts_at_each_threshold_the_answer_served_there() -> None:
    """Recalled scored 0.96 and bad; written scored 0.99 and good. At 0.99 and 0.98 (over the recalled
    score) the written answer is served; from 0.96 down, the recalled one is."""
    certifier = Certifier(0.02)
    certifier.observe_first([(0.96, True), (0.99, False)])
    bad_by_threshold = {t: test.bad for t, test in zip(certifier.thresholds, certifier.tests, strict=True)}
    seen_by_threshold = {t: test.seen for t, test in zip(certifier.thresholds, certifier.tests, strict=True)}
    assert bad_by_threshold[0.99] == bad_by_threshold[0.97] == 0.0
    assert bad_by_threshold[0.96] == bad_by_threshold[0.7] == 1.0
    assert seen_by_threshold[1.0] == 0  # the repeats' region: neither is Claude's answer repeated
    assert all(seen == 1 for t, seen in seen_by_threshold.items() if t < 1.0)
    certifier.observe_first([(0.5, True)])  # served nowhere: no region counts it
    assert sum(test.seen for test in certifier.tests) == len(certifier.tests) - 1


def test_a_decision_logged_before_attempts_were_logged_whole_is_still_read() -> None:
    """A log written by the previous version holds {"answer", "p_good", "audit_chance", "tried"}."""
    from finch.learning.events import Event

    old = {"answer": "written", "p_good": 0.99, "audit_chance": 0.1, "tried": [["recalled", 0.5], ["written", 0.99]]}
    row = {"seq": 7, "request_id": "r", "route": "forward", "reason": "sampled", "decision": json.dumps(old)}
    event = Event.from_request({**row, "conversation": None, "answer": "Claude's", "max_tokens": None})
    assert event.decision is not None and event.decision.answer == "written" and event.decision.p_good == 0.99
    attempt = event.decision.attempt
    assert attempt is not None and attempt.audit_chance == 0.1
    assert attempt.options([True, False]) == [(0.5, True), (0.99, False)]
