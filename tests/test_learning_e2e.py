"""The learning loop end to end: the anthropic SDK -> finch -> teacher, models learning for real.

One finch is trained once for the module (tiny models, a short cold start, no strategic sampling so
that "answered locally" is deterministic, and a loose 10% bound, which a few dozen clean answers
certify); the tests then probe what it learned.
"""

from __future__ import annotations

import time

import anthropic
import httpx
import pytest

from finch.config import load_settings
from finch.conversation import Conversation
from finch.server.app import build_app
from finch.server.runner import ServerThread
from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, build_teacher_app

KEY = "fake-learning-key"
MODEL = "claude-haiku-4-5"
PASSWORD = (
    "How do I reset my password?",
    "Open Settings, choose Security, then Reset password and follow the email link.",
)
PIN = ("How do I reset my PIN?", "Go to Cards, pick your card, then Change PIN; you will need the app passcode.")
TRAIN = [
    ("What is the capital of France?", "The capital of France is Paris."),
    PASSWORD,
    ("What is two plus two?", "Two plus two is four."),
    ("What are your opening hours?", "We are open from 9am to 5pm, Monday to Friday."),
    ("How can I close my account?", "Contact support from the Help tab and ask for the account to be closed."),
    ("Do you ship internationally?", "Yes, we ship to over forty countries; delivery takes five to ten days."),
    ("What is the refund policy?", "You can return items within thirty days for a full refund."),
]
SETTINGS = {
    "preset": "tiny",
    "cold_start": 10,
    "conservative_until": 100_000,
    "sampling": "*:0",
    "max_bad_local": 0.1,
    "seed": 0,
}


class Finch:
    def __init__(self, home, upstream_url, **overrides):
        settings = {"home": str(home), "upstream_url": upstream_url, **SETTINGS, **overrides}
        self.app = build_app(load_settings(settings, environ={}))
        self.server = ServerThread(self.app).start()
        self.url = self.server.url
        token = {"x-finch-token": overrides["client_token"]} if "client_token" in overrides else None
        self.sdk = anthropic.Anthropic(base_url=self.url, api_key=KEY, max_retries=0, default_headers=token)

    @property
    def loop(self):
        return self.app.state.proxy.learning

    def settle(self):
        """Wait until everything asked so far is logged and learned."""
        assert self.loop.drain(120)

    def ask(self, question, **extra):
        raw = self.sdk.messages.with_raw_response.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": question}], **extra
        )
        self.settle()
        return raw.headers["x-finch-source"], raw.parse()


def train_until_local(route, questions, rounds=40):
    """Ask every question each round (``route(question)`` -> its x-finch-source) until all are
    answered locally; fail after ``rounds``."""
    for _ in range(rounds):
        routes = [route(question) for question in questions]
        if all(r == "local" for r in routes):
            return
    pytest.fail(f"repeated questions were still forwarded after {rounds} rounds: {routes}")


def decide(finch, question):
    """finch's decision on a question, made without sending it (nothing is learned)."""
    return finch.loop.decide_now(Conversation("", (("user", question),)), 100)


@pytest.fixture(scope="module")
def teacher():
    t = Teacher(Corpus([*TRAIN, PIN]))
    server = ServerThread(build_teacher_app(t)).start()
    yield t, server.url
    server.stop()


@pytest.fixture(scope="module")
def trained(teacher, tmp_path_factory):
    home = tmp_path_factory.mktemp("learning-home")
    finch = Finch(home, teacher[1])
    train_until_local(lambda question: finch.ask(question)[0], [q for q, _ in TRAIN])
    yield finch, home
    finch.server.stop()


def test_repeated_questions_are_answered_locally_without_the_teacher(trained, teacher):
    finch, _ = trained
    before = teacher[0].requests
    for question, answer in TRAIN:
        source, message = finch.ask(question)
        assert source == "local"
        assert message.content[0].text == answer
        assert message.model == MODEL and message.usage.output_tokens > 0 and message.id.startswith("msg_")
    for question, answer in TRAIN[:3]:
        with finch.sdk.messages.stream(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": question}]
        ) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == answer and final.stop_reason == "end_turn"
    assert teacher[0].requests == before  # nothing reached the upstream


def test_a_near_miss_is_not_served_its_neighbours_answer(trained):
    finch, _ = trained
    source, message = finch.ask(PIN[0])
    assert message.content[0].text != PASSWORD[1]
    if source == "local":
        assert message.content[0].text == PIN[1]


@pytest.mark.parametrize(
    "variant",
    [
        {"tools": [{"name": "lookup", "description": "look it up", "input_schema": {"type": "object"}}]},
        {
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "text", "text": TRAIN[0][0]},
            ]
        },
        {"content": TRAIN[0][0] + " I want to end my life."},
    ],
    ids=["tools", "image", "safety"],
)
def test_tools_images_and_sensitive_topics_always_go_upstream(trained, teacher, variant):
    finch, _ = trained
    before = teacher[0].requests
    content = variant.get("content", TRAIN[0][0])
    extra = {k: v for k, v in variant.items() if k != "content"}
    raw = finch.sdk.messages.with_raw_response.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": content}], **extra
    )
    assert raw.headers["x-finch-source"] == "upstream"
    assert teacher[0].requests == before + 1


def test_a_bad_feedback_mark_sends_the_question_upstream_next_time(trained, teacher):
    finch, _ = trained
    question = TRAIN[3][0]
    raw = finch.sdk.messages.with_raw_response.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": question}]
    )
    assert raw.headers["x-finch-source"] == "local"
    verdict = httpx.post(
        finch.url + "/finch/feedback", json={"request_id": raw.headers["x-finch-request-id"], "good": False}
    )
    assert verdict.status_code == 200 and verdict.json()["learned"] is True
    source, _ = finch.ask(question)
    assert source == "upstream"
    unknown = httpx.post(finch.url + "/finch/feedback", json={"request_id": "req_finch_nope", "good": False})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    malformed = httpx.post(finch.url + "/finch/feedback", json={"request_id": 5})
    assert malformed.status_code == 400


def test_stats_and_metrics_show_the_learning_state(trained):
    finch, _ = trained
    learning = httpx.get(finch.url + "/finch/stats").json()["learning"]
    assert learning["learned"] >= 10 and learning["phase"] == "conservative"
    assert learning["max_bad_local"] == 0.1 and len(learning["bad_local_interval"]) == 2
    # It answers locally, so an operating point is certified, and it says what the bound is over.
    assert learning["certified"] and learning["threshold"] is not None
    assert learning["bound"]["evidence"] >= 20 and "served" in learning["bound"]["over"]
    metrics = httpx.get(finch.url + "/metrics").text
    assert 'finch_learned_examples{namespace="default"}' in metrics
    assert 'finch_bad_local_rate{namespace="default",stat="high"}' in metrics
    (namespace,) = httpx.get(finch.url + "/finch/stats").json()["namespaces"]
    assert namespace["namespace"] == "default" and 0 < namespace["until_first_local"] <= namespace["requests"]


def test_what_was_learned_survives_a_restart(trained, teacher):
    """Save, then load: the same scores and the same answers for every question, and a question
    answered locally before the restart is answered locally after it, without the teacher."""

    def decisions(finch):
        made = [decide(finch, q) for q, _ in TRAIN]
        return [(d.route, d.reason, d.answer, d.p_router, d.p_validator) for d in made]

    finch, home = trained
    before = decisions(finch)
    finch.server.stop()  # saves the models on shutdown
    again = Finch(home, teacher[1])
    try:
        assert decisions(again) == before
        local = [(q, d[2]) for (q, _), d in zip(TRAIN, before, strict=True) if d[0] == "local"]
        assert local, before
        asked = teacher[0].requests
        for question, answer in local:
            source, message = again.ask(question)
            assert source == "local" and message.content[0].text == answer
        assert teacher[0].requests == asked
    finally:
        again.server.stop()


def test_bad_audits_where_finch_serves_withdraw_its_certificate(trained, teacher):
    """Audits that find bad answers at the scores finch serves: the bound's evidence is spent, and
    finch forwards what it would have served until the evidence is earned again."""
    from finch.policy.decide import Attempt, Candidate
    from finch.store.db import read_rows
    from finch.store.writer import RequestRecord

    trained_finch, home = trained
    trained_finch.server.stop()  # what it learned, the certified bound included, saved on the way out
    finch = Finch(home, teacher[1])
    try:
        question, answer = next((q, a) for q, a in TRAIN if decide(finch, q).route == "local")
        assert finch.ask(question)[0] == "local"
        # Twenty audits in the log, as the request path writes them: an answer withheld at P(good)
        # 1.0 ("Bananas."), and Claude's answer, which contradicts it.
        claude = b'{"type":"message","role":"assistant","content":[{"type":"text","text":"Paris."}],"usage":{}}'
        withheld = Attempt((Candidate("Bananas.", "recalled", 1.0),), chosen=0, audit_chance=0.5)
        for i in range(20):
            finch.app.state.proxy.store.submit(
                RequestRecord(
                    f"req_audit_{i}", time.time(), "POST", "/v1/messages", "forward", "sampled", 200, model=MODEL,
                    chunks=[claude], conversation=Conversation("", (("user", f"q{i}"),)),
                    local_answer="Bananas.", attempt=withheld,
                )
            )  # fmt: skip
        finch.settle()
        standing = finch.loop.serving.standing
        assert standing.threshold is None and standing.over_bound
        before = teacher[0].requests
        source, message = finch.ask(question)
        assert source == "upstream" and teacher[0].requests == before + 1
        assert message.content[0].text == answer
        reasons = read_rows(home / "finch.db", "SELECT reason FROM requests ORDER BY ts DESC LIMIT 1")
        assert reasons[0]["reason"] == "uncertified"
    finally:
        finch.server.stop()
