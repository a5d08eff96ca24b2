"""What the bound counts is what the request path could serve: a question it never tries (blocked,
or Claude's answers to it differ) is kept apart, and an audit that cannot be learned still counts,
as bad."""

from finch.config import Settings
from finch.conversation import Conversation, question_key
from finch.learning.ensemble import Ensemble
from finch.learning.events import Event
from finch.learning.trainer import Trainer
from finch.policy.decide import Attempt, Candidate, Decision, Source
from finch.store.log import open_log
from finch.vocabulary import Reason, Route


def ask(text):
    return Conversation("", (("user", text),))


def settings(tmp_path):
    return Settings(home=tmp_path, preset="tiny", max_bad_local=0.1, cold_start=1, conservative_until=1)


def test_questions_the_request_path_never_tries_are_not_counted(tmp_path):
    ensemble = Ensemble(settings(tmp_path))
    joke, capital = ask("Tell me a joke."), ask("What is the capital of France?")
    ensemble.learn_from_claude(joke, "Why did the chicken cross the road? To get to the other side.")
    ensemble.learn_from_claude(joke, "I told my wife she drew her eyebrows too high. She looked surprised.")
    assert ensemble.consistency.varies(question_key(joke))
    counted = ensemble.certifier.requests
    ensemble.learn_from_claude(joke, "A third joke, about a penguin.")
    assert ensemble.certifier.requests == counted  # answers vary: forwarded before any model, so not counted

    ensemble.learn_from_claude(capital, "The capital of France is Paris.")
    assert ensemble.certifier.requests == counted + 1  # a question it would try is counted
    ensemble.block(capital)
    ensemble.learn_from_claude(capital, "The capital of France is Paris.")
    assert ensemble.certifier.requests == counted + 1  # blocked: kept apart


def test_an_audit_that_cannot_be_learned_counts_as_bad(tmp_path, monkeypatch):
    trainer = Trainer(settings(tmp_path), open_log(settings(tmp_path)))
    ensemble = trainer.ensemble

    def broken(*args, **kwargs):
        raise RuntimeError("a learning step that fails")

    monkeypatch.setattr(ensemble, "learn_from_claude", broken)
    attempt = Attempt((Candidate("Paris.", Source.RECALLED, 0.995, 0.99),), 0.9, 0, 0.1)
    decision = Decision(Route.FORWARD, Reason.SAMPLED, attempt)
    audit = Event("requests", 7, "req_1", ask("Capital of France?"), "Paris.", decision)
    assert trainer._learn(audit) is None  # noqa: SLF001
    region = ensemble.certifier.region(0.99)
    assert ensemble.certifier.requests == 1 and region.bad == 10.0  # bad, weighted by 1 / its audit chance
    plain = Event("requests", 8, "req_2", ask("Capital of Spain?"), "Madrid.", None)
    assert trainer._learn(plain) is None  # noqa: SLF001
    assert ensemble.certifier.requests == 1  # a forward that was never an audit has no attempt to count
    trainer.store.close()
