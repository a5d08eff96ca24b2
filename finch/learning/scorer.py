"""Scores on the request path, from one published snapshot of the models.

A ``Scorer`` holds inference copies of the router, validator and generator, the retrieval memory
and the stacker's fit, all from one serving snapshot (``finch.learning.snapshot``) that the trainer
published. A request takes one ``Scorer`` for its whole decision; a newer snapshot replaces it whole.

Each step costs more than the one before, so the ensemble calls them in order and stops as soon as
the policy (``finch.policy.decide``) has its answer: the question's neighbourhood and the router
(a few milliseconds, the question's embedding most of them), then the recalled answer's P(good),
and only when that is not enough, the generator writing a candidate token by token.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from finch.conversation import Conversation
from finch.learning.memory import Memory, Neighbourhood, question_text
from finch.learning.stacker import Stacker, stack_inputs
from finch.models.online import pad_batch
from finch.models.tokenizer import FinchTokenizer

Candidate = tuple[str, torch.Tensor]  # an answer and its embedding


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

    def neighbourhood(self, conversation: Conversation) -> Neighbourhood | None:
        return self.memory.around(self._question_vec(question_text(conversation)))

    def p_router(self, conversation: Conversation, hood: Neighbourhood | None) -> float:
        ids = self.tokenizer.render(conversation, self.router_len, cue_answer=False)
        features = torch.tensor([self.memory.question_features(hood)]) if self.router_features else None
        with torch.no_grad():
            logits, _ = self.router(torch.tensor([ids]), features=features)
        return float(torch.sigmoid(logits + self.router_prior)[0])

    def score(
        self, conversation: Conversation, hood: Neighbourhood | None, p_router: float, candidates: list[Candidate]
    ) -> tuple[list[float], list[float]]:
        """Each candidate's (P(good), the validator's own score)."""
        if not candidates:
            return [], []
        tok = self.tokenizer
        pairs = [tok.render_pair(conversation, text, self.validator_len) for text, _ in candidates]
        evidence = [self.memory.features(hood, vec) for _, vec in candidates]
        device = next(self.validator.parameters()).device
        with torch.no_grad():
            batch = pad_batch(pairs, tok.pad_id, device)
            logits, _ = self.validator(batch, features=torch.tensor(evidence).to(device))
        p_validators = torch.sigmoid(logits).tolist()
        stacked = [stack_inputs(p_router, p, e) for p, e in zip(p_validators, evidence, strict=True)]
        return [self.stacker.p_good(inputs) for inputs in stacked], p_validators

    def write(self, conversation: Conversation, limit: int, deadline: float) -> str | None:
        """The generator's answer; "" when it ran past ``limit`` tokens (no candidate), None past the deadline."""
        tok = self.tokenizer
        prompt = tok.render(conversation, self.generator_len - 1)
        ids: list[int] = []
        for token in self.generator.generate(prompt, limit, tok.eos_id):
            ids.append(token)
            if time.monotonic() > deadline:
                return None
        return tok.decode(ids) if len(ids) < limit else ""

    def embed_answer(self, text: str) -> torch.Tensor:
        return self._embed_answers([text])[0]


def recalled(memory: Memory, hood: Neighbourhood | None, retrieval: bool) -> list[Candidate]:
    """The answer the nearest past questions vote for: the first candidate tried."""
    found = memory.recall(hood) if retrieval else None
    return [] if found is None else [found]


def written_candidate(
    memory: Memory, written: str, written_vec: torch.Tensor, before: list[Candidate], retrieval: bool
) -> list[Candidate]:
    """The generator's answer, as the next candidate when it says something the ones before do not.

    A written answer that says what one of Claude's stored answers says is replaced by that
    answer: the same meaning in Claude's own words, so a small generator's slips (a repeated or
    dropped phrase, which the embedding barely notices) never reach a user."""
    if not written.strip():
        return []
    if retrieval:
        written, written_vec = memory.same_answer(written_vec) or (written, written_vec)
    if any(float(written_vec @ vec) >= memory.agree_cos for _, vec in before):
        return []
    return [(written, written_vec)]
