"""Claude's own consistency: a question Claude answered is repeated from memory from its second
sighting on; one whose answers differ is never answered locally."""

import random

from finch.config import Settings
from finch.conversation import Conversation
from finch.learning import snapshot
from finch.learning.consistency import Consistency
from finch.learning.ensemble import Ensemble
from finch.learning.serving import Serving


def same(a, b):
    return a.lower() == b.lower()


def test_an_answer_is_offered_from_the_second_sighting_until_claude_differs():
    c = Consistency()
    assert c.answer("q") is None  # never asked
    assert c.observe("q", "Paris.", same) is None
    assert c.answer("q") == "Paris."  # the second sighting's candidate: judged by Claude's answer to it
    assert c.observe("q", "paris.", same) is True
    assert c.answer("q") == "Paris."  # Claude's first words
    assert c.observe("q", "Lyon.", same) is False
    assert c.answer("q") is None and c.varies("q")  # one answer in two disagreed
    for _ in range(2):
        c.observe("q", "Paris.", same)
    assert c.varies("q")  # still one later answer in four disagreed
    c.observe("q", "Paris.", same)
    assert c.answer("q") == "Paris." and not c.varies("q")  # one in five: the judge's slip, not Claude's


def test_a_question_whose_answers_keep_differing_never_comes_back():
    c = Consistency()
    for i in range(10):
        c.observe("joke", f"joke number {i}", same)
    assert c.varies("joke") and c.answer("joke") is None


def test_the_oldest_questions_are_forgotten_and_state_round_trips():
    c = Consistency(capacity=2)
    for key in ("a", "b", "a", "c"):  # "a" was used again, so "b" is the oldest
        c.observe(key, key.upper(), same)
    assert len(c) == 2 and c.answer("a") == "A" and not c.varies("b")
    restored = Consistency.from_state(c.to_state(), capacity=2)
    assert restored.to_state() == c.to_state() and restored.answer("a") == "A"


def ask(text):
    return Conversation("", (("user", text),))


def test_the_ensemble_repeats_consistent_answers_and_forwards_varying_ones(tmp_path):
    config = Settings(
        home=tmp_path,
        preset="tiny",
        max_bad_local=0.1,  # a few dozen clean answers certify it
        cold_start=1,
        conservative_until=1,
        sampling="*:0",
    )
    ensemble = Ensemble(config)
    capital = ask("What is the capital of France?")
    joke = ask("Tell me a joke.")
    ensemble.learn_from_claude(joke, "Why did the chicken cross the road? To get to the other side.")
    ensemble.learn_from_claude(joke, "I told my wife she drew her eyebrows too high. She looked surprised.")
    for _ in range(80):
        ensemble.learn_from_claude(capital, "The capital of France is Paris.")
        if ensemble.threshold is not None:
            break
    assert ensemble.threshold is not None  # the repeats, judged against Claude, certified the bound

    serving = published(ensemble, tmp_path)
    decision = serving.decide(capital, 100, random.random)
    assert (decision.route, decision.reason) == ("local", "repeat")
    assert decision.answer == "The capital of France is Paris." and decision.p_good == 1.0
    varying = serving.decide(joke, 100, random.random)
    assert (varying.route, varying.reason) == ("forward", "answers_vary")
    assert serving.decide(capital, 2, random.random).reason == "local_too_long"  # never over max_tokens

    ensemble.save()
    again = published(Ensemble(config), tmp_path)
    assert again.decide(capital, 100, random.random).reason == "repeat"
    assert again.decide(joke, 100, random.random).reason == "answers_vary"


def published(ensemble, tmp_path):
    """What the server would serve from: the ensemble's snapshot, written and read back."""
    path = tmp_path / "serving.pt"
    snapshot.write(path, snapshot.capture(ensemble, 1))
    config = ensemble.config
    judge = ensemble.judge
    return Serving(snapshot.read(path), config, ensemble.tokenizer, lambda t: judge.embed([t])[0], judge.embed_answers)
