"""Inference: the scores a decision is made of, written once for both processes.

A ``Scorer`` holds a router, validator and generator, the retrieval memory and the stacker. On the
request path they are inference copies from one serving snapshot (``finch.learning.snapshot``), and
a request takes one ``Scorer`` for its whole decision; in the trainer they are the learners' own
modules, in evaluation mode, scoring each event before it is learned. The decision pipeline
(``finch.learning.pipeline``) calls its steps in order, each costlier than the one before: the
question's neighbourhood and the router (a few milliseconds, the question's embedding most of them),
a candidate's P(good), and only when that is not enough, the generator writing a candidate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from finch.conversation import Conversation
from finch.learning.memory import Memory, Neighbourhood, question_text
from finch.learning.stacker import Stacker, stack_inputs
from finch.models.tokenizer import FinchTokenizer


class Scorer:
    def __init__(
        self,
        router: nn.Module,
        router_prior: float,
        validator: nn.Module,
        generator: nn.Module,
        tokenizer: FinchTokenizer,
        memory: Memory,
        stacker: Stacker,
        question_vec: Callable[[str], torch.Tensor],
        embed_answers: Callable[[list[str]], torch.Tensor],
    ) -> None:
        """The modules are the scorer's own (``frozen``): nothing else may change them."""
        self.router = router
        self.router_prior = router_prior
        self.router_len = router.config.max_len
        self.router_features = bool(router.config.n_features)
        self.validator = validator
        self.validator_len = validator.config.max_len
        self.generator = generator
        self.generator_len = generator.config.max_len
        self.tokenizer = tokenizer
        self.memory = memory
        self.stacker = stacker
        self._question_vec = question_vec
        self._embed_answers = embed_answers

    def question_vec(self, conversation: Conversation) -> torch.Tensor:
        return self._question_vec(question_text(conversation))

    def p_router(self, conversation: Conversation, hood: Neighbourhood | None) -> float:
        ids = self.tokenizer.render(conversation, self.router_len, cue_answer=False)
        features = torch.tensor([self.memory.question_features(hood)]) if self.router_features else None
        with torch.no_grad():
            logits, _ = self.router(torch.tensor([ids]), features=features)
        return float(torch.sigmoid(logits + self.router_prior)[0])

    def score(
        self,
        conversation: Conversation,
        hood: Neighbourhood | None,
        p_router: float,
        text: str,
        vec: torch.Tensor,
        agreeing: torch.Tensor | None = None,
    ) -> tuple[float, float, list[float], list[float]]:
        """One candidate's (P(good), the validator's own score, the memory's evidence for it, the
        stacker's inputs). Candidates are scored one at a time, on both sides, so a score never
        depends on what else was in its batch. ``agreeing``: the memory's rows that agree with it,
        when already known (``Memory.agreeing``)."""
        evidence = self.memory.features(hood, vec, agreeing)
        device = next(self.validator.parameters()).device
        ids = torch.tensor([self.tokenizer.render_pair(conversation, text, self.validator_len)], device=device)
        with torch.no_grad():
            logits, _ = self.validator(ids, features=torch.tensor([evidence], device=device))
        p_validator = float(torch.sigmoid(logits)[0])
        stacked = stack_inputs(p_router, p_validator, evidence)
        return self.stacker.p_good(stacked), p_validator, evidence, stacked

    def write(self, conversation: Conversation, limit: int, deadline: float = math.inf) -> str | None:
        """The generator's answer (``answer_text``), or None once past the deadline."""
        ids: list[int] = []
        for token in self.generator.generate(self._prompt(conversation), limit, self.tokenizer.eos_id):
            ids.append(token)
            if time.monotonic() > deadline:
                return None
        return self.answer_text(ids, limit)

    def write_ids(self, conversations: list[Conversation], limit: int) -> list[list[int]]:
        """The generator's answers' ids, written together (a trainer's batch), each what it would
        have written alone; ``answer_text(ids, l)`` reads one as written to any limit l <= ``limit``."""
        return self.generator.generate_greedy([self._prompt(c) for c in conversations], limit, self.tokenizer.eos_id)

    def answer_text(self, ids: list[int], limit: int) -> str:
        """The answer written as ``ids``, to a limit of ``limit`` tokens: "" when it ran to the limit,
        since an answer cut short is no candidate."""
        ids = ids[:limit]
        return self.tokenizer.decode(ids) if len(ids) < limit else ""

    def _prompt(self, conversation: Conversation) -> list[int]:
        return self.tokenizer.render(conversation, self.generator_len - 1)

    def embed_answer(self, text: str) -> torch.Tensor:
        return self._embed_answers([text])[0]
