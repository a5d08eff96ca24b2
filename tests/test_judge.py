"""The judge and the retrieval memory: what labels every local attempt good or bad."""

from __future__ import annotations

import random

import pytest
import torch

from finch.learning.framing import Framing
from finch.learning.judge import Judge
from finch.learning.memory import Memory, closeness

TOPICS = [
    "card arrival",
    "card delivery estimate",
    "lost or stolen card",
    "exchange rate",
    "top up failed",
    "pending transfer",
    "change pin",
    "verify identity",
    "refund not showing up",
    "cash withdrawal charge",
    "declined card payment",
    "apple pay or google pay",
    "country support",
    "terminate account",
]
FRAMES = ["{a}", "Sure. {a}", "Here is what I can tell you: {a}", "Good question. {a}", "{a} I hope that helps."]


def _answer(topic: str) -> str:
    return f"{topic.capitalize()}. Our {topic} guide in the app covers {topic} step by step."


@pytest.fixture(scope="module")
def judge() -> Judge:
    return Judge()


def test_framing_is_learned_from_many_contexts_and_content_is_kept():
    framing = Framing(min_contexts=12)
    rng = random.Random(0)
    learned_any = False
    for _ in range(400):
        learned_any |= framing.observe(rng.choice(FRAMES).format(a=_answer(rng.choice(TOPICS))))
    assert learned_any
    assert framing.known == {"sure.", "here is what i can tell you:", "good question.", "i hope that helps."}
    assert framing.content("Good question. Card arrival. Our card arrival guide.") == (
        "Card arrival. Our card arrival guide."
    )
    assert framing.content("Sure.") == "Sure."  # nothing but framing: the answer stays whole


def test_a_clause_repeated_with_one_answer_is_content():
    framing = Framing(min_contexts=3)
    for frame in FRAMES * 5:
        framing.observe(frame.format(a="Reset it in Settings. Then sign in again."))
    assert "reset it in settings." not in framing.known
    assert "then sign in again." not in framing.known


def test_framing_glued_to_a_short_answer_without_a_sentence_end_is_taken_off(judge: Judge):
    """Real chat answers are often a word or two with no full stop ("Everywhere"); framing then
    joins the clause ("Everywhere I hope that helps."). Left in, it moved 8% of such pairs of the
    same answer past τ (measured on the chat stream's answers, BENCHMARKS.md)."""
    framing = Framing(known=["sure.", "i hope that helps."])
    assert framing.content("Everywhere I hope that helps.") == "Everywhere"
    assert framing.content("Sure. Everywhere I hope that helps.") == "Everywhere"
    assert framing.content("I hope that helps. I hope that helps.") == "I hope that helps. I hope that helps."
    assert framing.content("Sure I hope that helps you sleep") == "Sure I hope that helps you sleep"  # mid-text: kept
    judge.framing = framing
    assert judge.agrees("Hi", "Hi I hope that helps.")[0]
    assert not judge.agrees("Hi", "Everywhere I hope that helps.")[0]


def test_rewordings_agree_and_near_misses_do_not_once_framing_is_known(judge: Judge):
    judge.framing = Framing()
    rng = random.Random(1)
    for _ in range(400):
        judge.framing.observe(rng.choice(FRAMES).format(a=_answer(rng.choice(TOPICS))))
    for topic in TOPICS:
        for a, b in zip(FRAMES, FRAMES[1:], strict=False):
            good, d = judge.agrees(a.format(a=_answer(topic)), b.format(a=_answer(topic)))
            assert good, (topic, a, b, d)
    # Same framing, different content: without framing left out, these pairs sit within τ.
    wrong, _ = judge.agrees(
        "Here is what I can tell you: " + _answer("card arrival"),
        "Here is what I can tell you: " + _answer("card delivery estimate"),
    )
    assert not wrong


def test_without_framing_a_rewording_is_judged_bad(judge: Judge):
    """The reason framing is learned: the same answer, framed differently, diverges past τ."""
    judge.framing = Framing()
    reworded = ("Sure. " + _answer("lost or stolen card"), _answer("lost or stolen card") + " I hope that helps.")
    assert not judge.agrees(*reworded)[0]
    for _ in range(20):
        for topic in TOPICS:
            judge.framing.observe("Sure. " + _answer(topic))
            judge.framing.observe(_answer(topic) + " I hope that helps.")
    assert judge.agrees(*reworded)[0]


def test_memory_recall_survives_save_and_load(judge: Judge, tmp_path):
    judge.framing = Framing()
    memory = Memory(judge.threshold)
    questions = ["when will my card arrive", "how do I change my pin", "what is the exchange rate"]
    answers = [_answer("card arrival"), _answer("change pin"), _answer("exchange rate")]
    q_vecs = judge.embed(questions)
    a_vecs = judge.embed_answers(answers)
    for q, a, text in zip(q_vecs, a_vecs, answers, strict=True):
        memory.add(q, a, text)
    probe = judge.embed(["my new card still has not arrived"])[0]
    assert memory.recall(memory.around(probe))[0] == answers[0]
    memory.save(tmp_path / "memory.safetensors")
    loaded = Memory(judge.threshold)
    loaded.load(tmp_path / "memory.safetensors")
    text, vec = loaded.recall(loaded.around(probe))
    assert text == answers[0]
    assert torch.equal(vec, a_vecs[0])
    assert loaded.features(loaded.around(probe), a_vecs[0]) == memory.features(memory.around(probe), a_vecs[0])

    # The serving snapshot's copy: the three rows, not the 20,000-row ring they sit in.
    snapshot_rows = memory.serving_state()
    path = tmp_path / "rows.pt"
    torch.save(snapshot_rows, path)
    assert path.stat().st_size < 100_000
    served = Memory.serving(torch.load(path, weights_only=True), judge.threshold)
    assert served.recall(served.around(probe))[0] == answers[0]


def test_an_exact_repeat_outvotes_a_crowd_of_looser_neighbours():
    """Nine past questions at similarity 0.8 agree on one answer; the question itself was asked
    before and got another. The vote must follow the exact repeat, and say it is confident."""
    generator = torch.Generator().manual_seed(0)
    question, crowd_answer, own_answer = torch.nn.functional.normalize(torch.randn(3, 384, generator=generator), dim=1)
    memory = Memory(agree_threshold=0.15)
    for _ in range(9):
        noise = torch.nn.functional.normalize(torch.randn(384, generator=generator), dim=0)
        noise = torch.nn.functional.normalize(noise - (noise @ question) * question, dim=0)
        memory.add(0.8 * question + 0.6 * noise, crowd_answer, "the crowd's answer")
    memory.add(question, own_answer, "its own answer")
    hood = memory.around(question)
    assert memory.recall(hood)[0] == "its own answer"
    nearest, share, _, near = memory.question_features(hood)
    assert nearest == pytest.approx(1.0, abs=1e-5) and near == pytest.approx(1.0)
    assert share > 0.8  # against 1 / (1 + 9 × 0.8) ≈ 0.12 were similarity itself the weight
    # The validator's evidence says the same of each candidate: the crowd's answer is in conflict
    # with an exact repeat, and loses the vote.
    own, crowd = memory.features(hood, own_answer), memory.features(hood, crowd_answer)
    assert own[4] == pytest.approx(1.0) and own[6] > 0.8  # closeness of support, vote
    assert crowd[5] == pytest.approx(1.0) and crowd[6] < 0.2  # closeness of conflict, vote


def test_closeness_spreads_the_top_of_the_similarity_scale():
    values = [closeness(s) for s in (-0.5, 0.0, 0.5, 0.8, 0.9, 0.99, 1.0, 1.0000001)]
    assert values == sorted(values) and values[0] == values[1] == 0.0 and values[-1] == 1.0
    assert closeness(1.0) - closeness(0.9) > 5 * (1.0 - 0.9)  # an exact repeat stands far apart from a paraphrase


def test_reembed_replaces_every_stored_answer(judge: Judge):
    memory = Memory(judge.threshold)
    for topic in TOPICS[:3]:
        memory.add(torch.zeros(384), torch.zeros(384), "Sure. " + _answer(topic))
    memory.reembed(judge.embed_answers)
    expected = judge.embed_answers(["Sure. " + _answer(t) for t in TOPICS[:3]])
    assert torch.allclose(memory._answers[:3], expected, atol=1e-6)


def test_a_word_swapped_for_another_is_a_different_answer_whatever_the_embedding_says(judge: Judge):
    """Embeddings barely see a swap of one word for another, and it can be the whole answer: of the
    teacher's template answers for 64 assistant intents, 12 pairs (lights on and off, volume up
    and down) sat within τ (BENCHMARKS.md, "The judge")."""
    judge.framing = Framing(known=["sure.", "good question."])
    on, off = (
        f"Iot hue {s}. Our iot hue {s} guide in the app covers iot hue {s} step by step."
        for s in ("lighton", "lightoff")
    )
    assert judge.divergence(on, off) < judge.threshold  # the embedding alone would call them the same
    assert not judge.agrees(on, off)[0]
    assert not judge.agrees("Your card will arrive in 3 days.", "Your card will arrive in 5 days.")[0]
    # Not swaps: the same words reordered, a word added on one side, a framing clause.
    assert judge.agrees("Paris is the capital of France.", "The capital of France is Paris.")[0]
    assert judge.agrees("It is 5 km away.", "It is about 5 km away.")[0]
    assert judge.agrees("Sure. " + on, "Good question. " + on)[0]


def test_the_embedding_model_runs_in_bfloat16_only_where_the_cpu_has_it_and_keeps_float32s_vectors(judge: Judge):
    from finch.learning.judge import native_bfloat16

    assert judge.dtype == (torch.bfloat16 if native_bfloat16() else torch.float32)
    texts = [_answer(topic) for topic in TOPICS] + [f"How do I {topic}?" for topic in TOPICS]
    in_half = Judge(dtype=torch.bfloat16)
    full, half = Judge(dtype=torch.float32).embed(texts), in_half.embed(texts)
    assert in_half._model is not None and in_half._model.dtype == torch.bfloat16
    assert half.dtype == torch.float32  # pooled and compared in float32 either way
    assert float((full * half).sum(1).min()) > 0.999
    # Each text's nearest other text is the same under both.
    near_full, near_half = (full @ full.T).fill_diagonal_(-2).argmax(1), (half @ half.T).fill_diagonal_(-2).argmax(1)
    assert torch.equal(near_full, near_half)
