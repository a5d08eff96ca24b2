"""The router, validator and generator as the trainer holds them: the decision pipeline run on their
own modules, as the request path runs it on a snapshot of them, and their learning steps.

Scoring goes through the same ``Scorer`` the request path uses (``finch.learning.scorer``), so each
model's inference is written once; the learners' modules are put in evaluation mode for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from finch.conversation import Conversation
from finch.learning.consistency import Consistency
from finch.learning.home import ModelHome
from finch.learning.memory import Memory
from finch.learning.pipeline import Audience, Proposal, Scored
from finch.learning.scorer import Scorer
from finch.learning.stacker import Stacker
from finch.models.learners import Generator, Router, Validator
from finch.models.tokenizer import FinchTokenizer


class Learners:
    def __init__(
        self,
        files: ModelHome,
        tokenizer: FinchTokenizer,
        preset: str,
        seed: int,
        max_local_tokens: int,
        retrieval: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_local_tokens = max_local_tokens
        self.retrieval = retrieval
        self.router: Router = files.learner("router", tokenizer, preset, seed)  # type: ignore[assignment]
        self.validator: Validator = files.learner("validator", tokenizer, preset, seed)  # type: ignore[assignment]
        self.generator: Generator = files.learner("generator", tokenizer, preset, seed)  # type: ignore[assignment]
        self._written: dict[Conversation, list[int]] = {}  # the generator's answers, written ahead for a batch

    def all(self) -> tuple[Router, Validator, Generator]:
        return self.router, self.validator, self.generator

    # -- scoring -------------------------------------------------------------------------------------

    def scorer(
        self,
        memory: Memory,
        stacker: Stacker,
        question_vec: Callable[[str], torch.Tensor],
        embed_answers: Callable[[list[str]], torch.Tensor],
    ) -> Scorer:
        for learner in self.all():
            learner.module.eval()
        router, validator, generator = (learner.module for learner in self.all())
        prior = self.router.prior_logit()
        return Scorer(router, prior, validator, generator, self.tokenizer, memory, stacker, question_vec, embed_answers)

    def propose(
        self,
        scorer: Scorer,
        consistency: Consistency,
        conversation: Conversation,
        max_tokens: int,
        audience: Audience,
    ) -> Proposal:
        """Every candidate the request path could try, scored as it would score them, going on past
        the router's floor (the models learn from each)."""
        limit = min(max_tokens, self.max_local_tokens)
        ids = self._written.get(conversation)

        def write() -> str | None:
            return scorer.write(conversation, limit) if ids is None else scorer.answer_text(ids, limit)

        return Proposal(
            scorer,
            consistency,
            conversation,
            max_tokens=max_tokens,
            retrieval=self.retrieval,
            write=write,
            everything=True,
            audience=audience,
        )

    # -- learning ------------------------------------------------------------------------------------

    def begin_batch(self, scorer: Scorer, conversations: Sequence[Conversation]) -> None:
        """Take the next examples' steps together, at ``end_batch``; the generator, the same for the
        whole batch, writes its answers to the batch's questions together now."""
        for learner in self.all():
            learner.begin_batch()
        unique = list(dict.fromkeys(conversations))
        self._written = dict(zip(unique, scorer.write_ids(unique, self.max_local_tokens), strict=True))

    def end_batch(self) -> dict[str, float | None]:
        self._written = {}
        return {learner.kind: learner.end_batch() for learner in self.all()}

    def forget_written(self) -> None:
        """The answers written ahead came from models that were rolled back."""
        self._written = {}

    def learn_from_claude(
        self,
        conversation: Conversation,
        teacher_answer: str,
        candidates: list[tuple[Scored, bool]],
        good: bool,
        question_features: list[float],
        features: Callable[[str], list[float]],
        teacher_evidence: list[float],
    ) -> dict[str, float]:
        """One step each: the generator on Claude's answer, the router on whether the best
        candidate was ``good``, the validator on each model candidate's verdict (and on Claude's
        own answer as a good one when none was). ``features(answer)``: the memory's evidence for
        any other answer to this question; ``teacher_evidence``, for Claude's."""
        losses = {
            "generator": self.generator.learn(conversation, teacher_answer),
            "router": self.router.learn(conversation, good, question_features),
        }
        validator_losses = [
            self.validator.learn(conversation, s.candidate.text, ok, s.evidence, features if i == 0 else None)
            for i, (s, ok) in enumerate(candidates)
        ]
        if not any(ok for _, ok in candidates):
            validator_losses.append(self.validator.learn(conversation, teacher_answer, True, teacher_evidence))
        losses["validator"] = sum(validator_losses) / len(validator_losses)
        return losses

    def learn_verdict(
        self, conversation: Conversation, answer: str, good: bool, question_features: list[float], evidence: list[float]
    ) -> dict[str, float]:
        """A local answer's verdict: the router and validator learn it."""
        return {
            "router": self.router.learn(conversation, good, question_features),
            "validator": self.validator.learn(conversation, answer, good, evidence),
        }
