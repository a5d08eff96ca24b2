"""The three online models, in terms of conversations and answers rather than token ids.

    Router     conversation            -> p(a local answer would be good)
    Validator  conversation, answer    -> p(this answer is good)
    Generator  conversation            -> answer text, streamed; learns from the teacher's answers

Router and Validator are the classifiers of ``finch.models.classifiers``; the Generator is here,
with the registry that rebuilds any of the three from its checkpoint.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from finch.conversation import Conversation
from finch.models import checkpoint
from finch.models.classifiers import Router, Validator
from finch.models.encoder import EncoderConfig
from finch.models.generator import IGNORE, Decoder, GeneratorConfig
from finch.models.online import OnlineLearner, Reservoir, TrainConfig, pad_batch
from finch.models.tokenizer import FinchTokenizer

# Measured on Banking77 (BENCHMARKS.md): at 1e-4 the generator needs hundreds of steps per answer;
# at 1e-3 with two steps per example it reproduces an answer after a handful of sightings.
GENERATOR_TRAIN = TrainConfig(lr=1e-3, steps_per_example=2, replay_per_step=5)


class Generator(OnlineLearner):
    """The generator, learning by distillation: the teacher's answer is the target."""

    kind = "generator"

    def __init__(
        self, config: GeneratorConfig, tokenizer: FinchTokenizer, train: TrainConfig = GENERATOR_TRAIN, seed: int = 0
    ) -> None:
        torch.manual_seed(seed)
        super().__init__(Decoder(config), train, seed)
        self.config = config
        self.tokenizer = tokenizer
        self.replay = Reservoir(train.replay_capacity, random.Random(seed))
        self.max_answer = config.max_len * 3 // 4  # the prompt keeps at least a quarter of the context

    def example(self, conversation: Conversation, answer: str) -> tuple[list[int], list[int]]:
        answer_ids = [*self.tokenizer.encode(answer)[: self.max_answer - 1], self.tokenizer.eos_id]
        prompt = self.tokenizer.render(conversation, self.config.max_len - len(answer_ids) + 1)
        return prompt, answer_ids

    def learn(self, conversation: Conversation, answer: str) -> float:
        return self.learn_ids(*self.example(conversation, answer))

    def learn_ids(self, prompt: list[int], answer: list[int]) -> float:
        """NaN in a batch (``begin_batch``), whose loss comes at its end."""
        self.replay.add([prompt, answer])
        if self.pending is not None:
            self.pending.append((prompt, answer))
            return math.nan
        losses = []
        for _ in range(self.train.steps_per_example):
            batch = [(prompt, answer), *self.replay.sample(self.train.replay_per_step)]
            losses.append(self._optimise(lambda batch=batch: self._batch_loss(batch)))
        return sum(losses) / len(losses)

    def _pending_loss(self, pending: list[Any]) -> torch.Tensor:
        return self._batch_loss([*pending, *self.replay.sample(self.train.replay_per_step)])

    def _batch_loss(self, batch: list[Any]) -> torch.Tensor:
        inputs, targets = [], []
        for prompt, answer in batch:
            full = [*prompt, *answer]
            inputs.append(full[:-1])
            targets.append([IGNORE] * (len(prompt) - 1) + answer)  # loss on the answer and <eos> only
        x = pad_batch(inputs, self.tokenizer.pad_id, self.device)
        y = pad_batch(targets, IGNORE, self.device)
        _, loss = self.module(x, y)
        assert loss is not None
        return loss

    def stream(
        self, conversation: Conversation, max_tokens: int, temperature: float = 0.0, top_p: float = 1.0
    ) -> Iterator[int]:
        """Token ids of a local answer, as they are generated."""
        self.module.eval()
        prompt = self.tokenizer.render(conversation, self.config.max_len - 1)
        yield from self.module.generate(prompt, max_tokens, self.tokenizer.eos_id, temperature, top_p)

    def answer(self, conversation: Conversation, max_tokens: int = 256) -> str:
        return self.tokenizer.decode(self.stream(conversation, max_tokens))

    def answers(self, conversations: list[Conversation], max_tokens: int = 256) -> list[str]:
        """``answer`` to each, written together (``Decoder.generate_greedy``)."""
        self.module.eval()
        prompts = [self.tokenizer.render(c, self.config.max_len - 1) for c in conversations]
        written = self.module.generate_greedy(prompts, max_tokens, self.tokenizer.eos_id)
        return [self.tokenizer.decode(ids) for ids in written]

    def replay_state(self) -> dict[str, Any]:
        return self.replay.state()

    def load_replay_state(self, state: dict[str, Any]) -> None:
        self.replay.load_state(state)


LEARNERS: dict[str, tuple[type[OnlineLearner], type]] = {
    "router": (Router, EncoderConfig),
    "validator": (Validator, EncoderConfig),
    "generator": (Generator, GeneratorConfig),
}


def load_learner(root: Path, kind: str, tokenizer: FinchTokenizer) -> OnlineLearner | None:
    """The newest good checkpoint of ``kind`` under ``root``, rebuilt from its own metadata; None if none."""
    found = checkpoint.latest(root, kind, tokenizer.hash)
    if found is None:
        return None
    learner_cls, config_cls = LEARNERS[kind]
    config = config_cls(**found.meta["config"]["model"])
    train = TrainConfig(**found.meta["config"]["train"])
    learner = learner_cls(config, tokenizer, train)  # type: ignore[call-arg]
    checkpoint.restore(found, learner)
    return learner
