"""Forgetting, as a namespace asks it: one question, or everything it taught. Its stored
conversations go at once, every replica stops serving it at once, and the trainer forgets what it
learned (the question's memory rows and Claude's repeated answer, or the whole namespace's models)."""

from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner

from finch.cli import main
from finch.config import Settings
from finch.conversation import Conversation, question_key
from finch.learning import snapshot
from finch.learning.ensemble import Ensemble
from finch.server.runner import ServerThread
from finch.store.db import read_rows
from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, build_teacher_app
from tests.test_learning_e2e import TRAIN, Finch, train_until_local

pytestmark = pytest.mark.slow


def ask(text: str) -> Conversation:
    return Conversation("", (("user", text),))


def test_the_ensemble_forgets_a_question_and_keeps_the_rest(tmp_path):
    ensemble = Ensemble(Settings(home=tmp_path, preset="tiny"))
    for question, answer in TRAIN[:3]:
        for _ in range(2):
            ensemble.learn_from_claude(ask(question), answer)
    (forgotten, its_answer), (kept, kept_answer) = TRAIN[0], TRAIN[1]
    assert ensemble.block(ask(forgotten.upper()), forget=True) == 2  # the same question after normalisation
    assert ensemble.consistency.answer(question_key(ask(forgotten))) is None
    assert question_key(ask(forgotten)) in ensemble.blocked
    assert its_answer not in ensemble.memory.serving_state()["texts"]
    assert ensemble.consistency.answer(question_key(ask(kept))) == kept_answer
    assert ensemble.memory.serving_state()["texts"].count(kept_answer) == 2


def stored(home, question: str) -> int:
    rows = read_rows(home / "finch.db", "SELECT conversation FROM examples")
    return sum(question_key(Conversation.from_json(r["conversation"])) == question_key(ask(question)) for r in rows)


def served_snapshot(home) -> dict:
    found = snapshot.read(home / "models" / "serving.safetensors")
    assert found is not None
    return found


@pytest.fixture
def taught(tmp_path):
    upstream = ServerThread(build_teacher_app(Teacher(Corpus(TRAIN)))).start()
    home = tmp_path / "home"
    finch = Finch(home, upstream.url)
    train_until_local(lambda question: finch.ask(question)[0], [q for q, _ in TRAIN])
    yield finch, home
    finch.server.stop()
    upstream.stop()


def test_a_question_and_then_everything_is_forgotten_through_the_endpoint_and_the_cli(taught):
    finch, home = taught
    (question, answer), (other, _) = TRAIN[0], TRAIN[1]
    assert stored(home, question) > 0 and answer in served_snapshot(home)["memory"]["texts"]
    forgot = httpx.post(finch.url + "/finch/forget", json={"question": question})
    assert forgot.status_code == 200 and forgot.json()["stored_conversations_deleted"] > 0
    finch.app.state.proxy.store.flush()
    assert stored(home, question) == 0  # at once
    finch.settle()  # the trainer forgot what it learned of it
    learned = served_snapshot(home)
    assert answer not in learned["memory"]["texts"] and question_key(ask(question)) in learned["blocked"]
    assert finch.ask(question)[0] == "upstream" and finch.ask(other)[0] == "local"

    bad = httpx.post(finch.url + "/finch/forget", json={"question": question, "everything": True})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert httpx.post(finch.url + "/finch/forget", json={"everything": True}).status_code == 200
    assert finch.ask(other)[0] == "upstream"  # nothing it taught is served any more
    status = httpx.get(finch.url + "/finch/stats").json()["learning"]
    assert status["phase"] == "cold_start" and status["learned"] <= 1  # starting again (from the ask above)
    assert stored(home, other) <= 1
    finch.server.stop()

    # Offline, through the command: done at once by a trainer of its own.
    result = CliRunner().invoke(
        main, ["forget", "--home", str(home), "--question", other, "--yes"], env={"FINCH_PRESET": "tiny"}
    )
    assert result.exit_code == 0, result.output
    assert question_key(ask(other)) in served_snapshot(home)["blocked"] and stored(home, other) == 0
