"""OpenAI's Chat Completions through finch, with the real ``openai`` SDK: forwarded byte for byte,
logged with tokens and cost, errors in the dialect's own shape, and, once learned, answered locally
in that shape (JSON and streaming), sharing what it learned with the Messages API."""

from __future__ import annotations

import hashlib
import json

import anthropic
import httpx
import openai
import pytest

from finch.server.runner import ServerThread
from finch.store.db import read_rows
from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, build_teacher_app
from tests.conftest import QA, flush
from tests.test_learning_e2e import KEY, MODEL, TRAIN, Finch, train_until_local


def client(finch, **extra) -> openai.OpenAI:
    return openai.OpenAI(base_url=finch.url + "/v1", api_key=KEY, max_retries=0, **extra)


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def test_chat_completions_are_forwarded_logged_and_priced(finch, teacher, home):
    sdk = client(finch)
    question, answer = QA[0]
    raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=ask(question), max_tokens=50)
    completion = raw.parse()
    assert raw.headers["x-finch-source"] == "upstream"
    assert completion.object == "chat.completion" and completion.choices[0].message.content == answer
    stream = sdk.chat.completions.create(
        model=MODEL, messages=ask(question), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    # Byte for byte: the teacher hashes the body it received.
    body = json.dumps({"model": MODEL, "messages": ask(question), "temperature": 0.3}, indent=3).encode()
    sent = httpx.post(finch.url + "/v1/chat/completions", content=body, headers={"authorization": f"Bearer {KEY}"})
    assert sent.headers["x-teacher-body-sha256"] == hashlib.sha256(body).hexdigest()

    flush(finch)
    rows = read_rows(home / "finch.db", "SELECT * FROM requests ORDER BY ts")
    assert [r["path"] for r in rows] == ["/v1/chat/completions"] * 3
    assert all(r["reason"] == "cold_start" and r["model"] == MODEL for r in rows)
    assert all(r["input_tokens"] > 0 and r["output_tokens"] > 0 and r["cost_usd"] > 0 for r in rows)
    assert rows[1]["stream"] == 1
    examples = read_rows(home / "finch.db", "SELECT answer FROM examples")
    assert [e["answer"] for e in examples] == [answer] * 3  # each one a lesson, whatever its dialect


def test_finch_words_its_own_errors_as_chat_completions_does(start_finch, teacher, home):
    finch = start_finch(teacher.url, client_token="secret")
    sdk = client(finch, default_headers={"x-finch-token": "secret"})
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model=MODEL, messages=[])
    assert bad.value.status_code == 400 and bad.value.body["type"] == "invalid_request_error"
    assert "messages" in bad.value.body["message"]
    with pytest.raises(openai.AuthenticationError) as refused:
        client(finch).chat.completions.create(model=MODEL, messages=ask("hi"))
    assert refused.value.body["type"] == "authentication_error"

    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    sdk.chat.completions.create(model=MODEL, messages=ask("hi"), tools=tools)
    sdk.chat.completions.create(model=MODEL, messages=ask("hi"), n=2)
    sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}],
    )
    flush(finch)
    reasons = [r["reason"] for r in read_rows(home / "finch.db", "SELECT reason FROM requests ORDER BY ts")]
    assert reasons == [
        "invalid_request_error",
        "authentication_error",
        "ineligible:tools",
        "ineligible:choices",
        "ineligible:image",
    ]


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A finch that learned TRAIN from Chat Completions requests alone."""
    teacher = ServerThread(build_teacher_app(Teacher(Corpus(TRAIN)))).start()
    finch = Finch(tmp_path_factory.mktemp("openai-home"), teacher.url)
    sdk = client(finch)

    def route(question: str) -> str:
        raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=ask(question), max_tokens=100)
        finch.settle()
        return raw.headers["x-finch-source"]

    train_until_local(route, [q for q, _ in TRAIN])
    yield finch
    finch.server.stop()
    teacher.stop()


@pytest.mark.slow
def test_learned_questions_are_answered_locally_in_either_dialect(learned):
    sdk = client(learned)
    for question, answer in TRAIN[:3]:
        raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=ask(question))
        completion = raw.parse()
        assert raw.headers["x-finch-source"] == "local"
        assert completion.choices[0].message.content == answer and completion.choices[0].finish_reason == "stop"
        assert completion.model == MODEL and completion.usage.completion_tokens > 0
        chunks = list(
            sdk.chat.completions.create(
                model=MODEL, messages=ask(question), stream=True, stream_options={"include_usage": True}
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
        assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    # Learned in one dialect, answered in the other.
    messages = anthropic.Anthropic(base_url=learned.url, api_key=KEY, max_retries=0)
    raw = messages.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=ask(TRAIN[0][0]))
    assert raw.headers["x-finch-source"] == "local" and raw.parse().content[0].text == TRAIN[0][1]


@pytest.mark.parametrize(
    "field", ["max_tokens", "max_completion_tokens", "stream", "n", "response_format", "stream_options", "tools"]
)
def test_a_field_of_the_wrong_type_is_a_clear_400_or_passes_through(finch, field):
    """Each field finch reads, on an otherwise good request, with values of every other JSON type:
    never a 500 from finch."""
    for bad in ([1], "x", 7, 2.5, {"a": 1}, True, None, -1):
        body = {"model": MODEL, "messages": ask(QA[0][0]), field: bad}
        response = httpx.post(finch.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
        assert response.status_code < 500, (field, bad, response.text)
        if response.headers.get("x-finch-source") != "upstream" and response.status_code >= 400:
            assert field in response.json()["error"]["message"]
