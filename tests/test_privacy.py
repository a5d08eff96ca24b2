"""Privacy inside a shared namespace: an answer Claude gave one end user reaches another only once
Claude gave it, in words the judge finds equal, to share_after_users distinct end users."""

from __future__ import annotations

import anthropic
import pytest

from finch.config import Settings
from finch.conversation import Conversation
from finch.keys import Keys
from finch.learning import snapshot
from finch.learning.ensemble import Ensemble
from finch.learning.memory import Memory
from finch.learning.serving import Serving
from finch.policy.decide import Source, Standing
from finch.policy.privacy import shareable
from finch.store.db import read_rows
from tests.conftest import flush, teacher_stats

BALANCE = Conversation("", (("user", "What is my balance?"),))
PASSWORD = Conversation("", (("user", "How do I reset my password?"),))
ADA_BALANCE = "Your balance is 120 dollars, Ada."
RESET = "Open Settings, choose Security, then Reset password."


def test_an_answer_is_its_holders_until_k_of_them_have_it():
    assert shareable({"ada"}, "ada", 3)  # your own answer
    assert not shareable({"ada"}, "bo", 3) and not shareable({"ada", "bo"}, "cy", 3)
    assert shareable({"ada", "bo", "cy"}, "dee", 3)  # everyone's
    assert not shareable({"ada"}, "", 3)  # a request that names no one sees no one's answer
    assert shareable({""}, "", 3) and shareable(set(), "bo", 3)  # the namespace's own; nobody's (written)
    assert shareable({"ada"}, "bo", 1)  # k = 1: no privacy between end users


@pytest.fixture(scope="module")
def taught(tmp_path_factory) -> Ensemble:
    """Ada asked her balance twice; three end users were told how to reset a password alike."""
    home = tmp_path_factory.mktemp("privacy")
    ensemble = Ensemble(Settings(home=home, preset="tiny", local_budget_s=60.0))
    for _ in range(2):
        ensemble.learn_from_claude(BALANCE, ADA_BALANCE, end_user="ada")
    for user in ("ada", "bo", "cy"):
        ensemble.learn_from_claude(PASSWORD, RESET, end_user=user)
    return ensemble


def servable(ensemble: Ensemble, conversation: Conversation, user: str) -> set[str]:
    proposal = ensemble.propose(conversation, 256, user)
    list(proposal)
    return {s.candidate.text for s in proposal.servable()}


def test_a_personal_answer_stays_with_its_end_user_and_a_common_one_is_shared(taught, monkeypatch):
    assert ADA_BALANCE in servable(taught, BALANCE, "ada")
    for other in ("bo", ""):
        proposal = taught.propose(BALANCE, 256, other)
        tried = list(proposal)
        assert any(s.candidate.text == ADA_BALANCE for s in tried)  # offered, as Claude's repeated answer
        assert ADA_BALANCE not in {s.candidate.text for s in proposal.servable()} and proposal.withheld
    assert RESET in servable(taught, PASSWORD, "dee")  # three end users were told it: everyone's
    monkeypatch.setattr(taught, "config", Settings(home=taught.config.home, preset="tiny", share_after_users=1))
    assert ADA_BALANCE in servable(taught, BALANCE, "bo")  # the test sees a share where one is configured


def test_the_request_path_withholds_what_the_trainer_withholds(taught, tmp_path):
    path = tmp_path / "serving.safetensors"
    snapshot.write(path, snapshot.capture(taught, 1))
    judge = taught.judge
    embed = judge.embed_answers
    serving = Serving(snapshot.read(path), Settings(), taught.tokenizer, lambda t: judge.embed([t])[0], embed)
    serving.standing = Standing("learned", 0.0, 0.0, False, 0.0)  # everything passes, nothing is audited
    for user, reason in (("ada", "repeat"), ("bo", "not_shared"), ("", "not_shared")):
        decision = serving.decide(BALANCE, 256, lambda: 1.0, end_user=user)
        assert decision.reason == reason, (user, decision)
    shared = serving.decide(PASSWORD, 256, lambda: 1.0, end_user="dee")
    assert shared.reason == "repeat" and shared.answer == RESET and shared.choice.source == Source.REPEAT


def test_the_memory_keeps_whom_each_answer_was_given_to_across_save_and_load(taught, tmp_path):
    taught.memory.save(tmp_path / "memory.safetensors")
    loaded = Memory(taught.config.judge_threshold)
    loaded.load(tmp_path / "memory.safetensors")
    for text in (ADA_BALANCE, RESET):
        vec = taught.judge.embed_answers([text])[0]
        assert loaded.holders(vec) == taught.memory.holders(vec)
    assert loaded.holders(taught.judge.embed_answers([ADA_BALANCE])[0]) == {"ada"}
    assert loaded.holders(taught.judge.embed_answers([RESET])[0]) == {"ada", "bo", "cy"}


MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "Hello there"}]}


def logged(home) -> list[dict]:
    return read_rows(
        home / "finch.db",
        "SELECT r.reason, e.end_user, e.request_id IS NOT NULL AS kept FROM requests r"
        " LEFT JOIN examples e ON e.request_id = r.id ORDER BY r.ts",
    )


def test_a_key_marked_for_end_users_names_them_or_is_never_answered_locally(start_finch, teacher, home):
    keys = Keys(home)
    keys.add_upstream("shop", "fake-key-shop-1", end_users=True)
    keys.add_upstream("quiet", "fake-key-quiet-2", opt_out=("learning",))
    finch = start_finch(teacher.url, isolation="credential")
    shop = anthropic.Anthropic(base_url=finch.url, api_key="fake-key-shop-1", max_retries=0)
    shop.messages.create(**MESSAGE)  # names no end user
    shop.messages.create(**MESSAGE, extra_headers={"x-finch-end-user": "customer-42@example.com"})
    assert teacher_stats(teacher)["last_request"]["finch_headers"] == []  # finch's headers stay with finch
    shop.messages.create(**MESSAGE, metadata={"user_id": "customer-42@example.com"})  # the body names them
    other = anthropic.Anthropic(base_url=finch.url, api_key="fake-key-other-3", max_retries=0)
    other.messages.create(**MESSAGE, metadata={"user_id": "session-7"})  # unmarked: the body's field is not read
    quiet = anthropic.Anthropic(base_url=finch.url, api_key="fake-key-quiet-2", max_retries=0)
    quiet.messages.create(**MESSAGE)
    flush(finch)
    rows = logged(home)
    assert rows[0]["reason"] == "end_user_missing" and rows[0]["end_user"] == ""
    named, from_body = rows[1]["end_user"], rows[2]["end_user"]
    assert named and named == from_body  # the same end user, however named, kept as one digest
    assert rows[3]["end_user"] == ""
    assert rows[4]["reason"] == "opted_out" and not rows[4]["kept"]  # its key keeps nothing of it
    stored = b"".join(path.read_bytes() for path in home.rglob("*") if path.is_file())
    assert b"customer-42" not in stored  # only the digest


def test_keys_with_marks_are_made_and_listed(home):
    from click.testing import CliRunner

    from finch.cli import main

    runner = CliRunner()
    made = runner.invoke(
        main, ["keys", "create", "--home", str(home), "--namespace", "shop", "--end-users", "--opt-out", "local"]
    )
    assert made.exit_code == 0, made.output
    listed = runner.invoke(main, ["keys", "list", "--home", str(home)]).output
    assert "end users" in listed and "opted out of local" in listed
