"""The request path and the trainer run one decision pipeline: replayed through both, a stream gets the
same candidates, the same scores and the same choice at every threshold, so the bound counts what
is served."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from finch.config import Settings
from finch.conversation import Conversation
from finch.learning import snapshot
from finch.learning.ensemble import Ensemble
from finch.learning.serving import Serving
from finch.policy.decide import Attempt, Standing, first_passing
from finch.teacher.corpus import reword
from tests.datasets import banking77

THRESHOLDS = (0.3, 0.6, 0.9, 0.97, 1.0)
MAX_TOKENS = (6, 40, 256)  # 6: most written answers run to the limit and are cut short
END_USERS = ("", "ada", "bo", "cy")  # "": a request that names no end user


@dataclass
class Replayed:
    requests: int = 0
    compared: int = 0  # requests whose candidates the models were asked for on both sides
    written: int = 0  # of them, requests where the request path went on to a written answer
    served: int = 0  # of them, requests where the request path had an answer that passed
    withheld: int = 0  # of them, requests with a candidate that was another end user's alone
    mismatches: int = 0


def stream(n: int, seed: int = 0) -> list[tuple[str, str, int, str]]:
    """Banking77 questions from six intents, each answered by its intent's one answer in varied
    framing, as Claude would (so the judge learns framing on the way): paraphrases and exact
    repeats, with several max_tokens, for several end users. Two intents' answers name the end user
    asking, so they are theirs alone (``finch.policy.privacy``)."""
    by_intent = banking77("train")
    intents = sorted(by_intent)[:6]
    rng = random.Random(seed)
    pool = [(u, f"For {intent.replace('_', ' ')}: open the app and follow the steps shown{{}}.", i < 2)
            for i, intent in enumerate(intents) for u in by_intent[intent][:8]]  # fmt: skip
    requests = []
    for _ in range(n):
        question, answer, personal = rng.choice(pool)
        user = rng.choice(END_USERS)
        answer = answer.format(f", {user or 'you'}" if personal else "")
        requests.append((question, reword(answer, rng), rng.choice(MAX_TOKENS), user))
    return requests


def served_at(attempt: Attempt, threshold: float) -> str | None:
    chosen = first_passing([c.p_good for c in attempt.candidates], threshold)
    return None if chosen is None else attempt.candidates[chosen].text


def replay(ensemble: Ensemble, tmp_path, requests: list[tuple[str, str, int, str]]) -> Replayed:
    """Each request is decided by the request path from a snapshot of the trainer's state, then
    proposed by the trainer from that same state, compared, and learned."""
    judge, path, seen = ensemble.judge, tmp_path / "serving.safetensors", Replayed()
    for i, (question, answer, max_tokens, user) in enumerate(requests):
        conversation = Conversation("", (("user", question),))
        snapshot.write(path, snapshot.capture(ensemble, i + 1))
        serving = Serving(
            snapshot.read(path),
            ensemble.config,
            ensemble.tokenizer,
            lambda t: judge.embed([t])[0],
            judge.embed_answers,
        )
        threshold = THRESHOLDS[i % len(THRESHOLDS)]
        serving.standing = Standing("learned", threshold, 0.0, False, 0.0)  # every attempt made, none audited
        decision = serving.decide(conversation, max_tokens, lambda: 1.0, end_user=user)
        seen.requests += 1
        if decision.attempt is not None:
            proposal = ensemble.propose(conversation, max_tokens, user)
            list(proposal)  # the trainer takes every candidate
            seen.withheld += bool(proposal.withheld)
            trainer, request = proposal.attempt(), decision.attempt
            # The request path stops at the first candidate that passes; short of that it tried them all.
            stopped = served_at(request, threshold) is not None
            same = trainer.candidates[: len(request.candidates)] if stopped else trainer.candidates
            agree = (
                same == request.candidates  # texts, sources and scores, to the last bit
                and served_at(request, threshold) == served_at(trainer, threshold)
                and request.p_router in (None, trainer.p_router)
            )
            seen.compared += 1
            seen.written += any(c.source == "written" for c in request.candidates)
            seen.served += served_at(request, threshold) is not None
            seen.mismatches += not agree
        ensemble.learn_from_claude(conversation, answer, max_tokens=max_tokens, end_user=user)
    return seen


@pytest.fixture
def ensemble(tmp_path) -> Ensemble:
    settings = Settings(home=tmp_path, preset="tiny", local_budget_s=60.0)  # no deadline: the same words each time
    return Ensemble(settings, seed_texts=[q for q, *_ in stream(200)])


def test_a_stream_replayed_through_the_trainer_reproduces_the_request_path(ensemble, tmp_path):
    seen = replay(ensemble, tmp_path, stream(60))
    assert seen.mismatches == 0, seen
    assert ensemble.judge.framing.known  # framing was learned mid-stream, candidates re-embedded
    # The comparison covered what it must: attempts that stopped at a recalled or repeated answer,
    # attempts that went on to a written one, and answers that passed.
    assert seen.compared >= 50 and seen.written >= 5 and seen.served >= 5 and seen.withheld >= 5, seen


@pytest.mark.slow
def test_the_replay_fails_when_one_side_keeps_an_answer_cut_short(ensemble, tmp_path, monkeypatch):
    """Break the agreement on purpose: the trainer keeps a written answer that ran to its limit (as it
    once did), the request path does not. The replay must see it."""
    propose = Ensemble.propose

    def keeps_cut_answers(self, conversation, max_tokens, end_user=""):
        proposal = propose(self, conversation, max_tokens, end_user)
        scorer = proposal.scorer
        limit = min(max_tokens, self.config.max_local_tokens)
        ids = list(scorer.generator.generate(scorer._prompt(conversation), limit, scorer.tokenizer.eos_id))
        proposal.write = lambda: scorer.tokenizer.decode(ids)
        return proposal

    monkeypatch.setattr(Ensemble, "propose", keeps_cut_answers)
    assert replay(ensemble, tmp_path, stream(60)).mismatches > 0
