import random

import httpx

from finch.teacher.corpus import GENERIC_ANSWER, Corpus, load_default, reword


def test_lookup_exact_then_nearest_then_generic():
    corpus = Corpus([("What is the capital of France?", "Paris."), ("How do I bake bread?", "Knead, rise, bake.")])
    assert corpus.answer("  what is the CAPITAL of france? ") == "Paris."
    assert corpus.answer("what's the capital city of France") == "Paris."
    assert corpus.answer("quantum chromodynamics") == GENERIC_ANSWER


def test_default_corpus_ships_in_a_package():
    corpus = load_default()
    assert len(corpus) > 500
    assert corpus.answer(corpus.questions[10]) == corpus.answers[10]


def test_reword_keeps_the_answer():
    rng = random.Random(1)
    variants = {reword("Paris.", rng) for _ in range(50)}
    assert len(variants) > 2 and all("Paris." in v for v in variants)


def test_teacher_requires_auth_and_counts(teacher):
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(teacher.url + "/v1/messages", json=body).status_code == 401
    ok = httpx.post(teacher.url + "/v1/messages", json=body, headers={"x-api-key": "k"})
    assert ok.status_code == 200 and ok.json()["usage"]["output_tokens"] >= 1
    assert httpx.get(teacher.url + "/_teacher/stats").json()["requests"] == 2


def test_nesting_too_deep_is_a_400_like_the_api(teacher):
    """Found by benchmarks/rawfuzz.py: the simulator answered it with a 500 of its own."""
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = httpx.post(teacher.url + path, content=deep, headers={"x-api-key": "k"})
        assert response.status_code == 400, (path, response.status_code)
        assert response.json()["error"]["type"] == "invalid_request_error"
