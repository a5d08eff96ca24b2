"""Router and Validator: the two online classifiers, sharing ``OnlineClassifier``: the encoder, and a
balanced replay (one reservoir per label, sampled equally, so a stream of mostly-bad early labels does
not teach "always bad"), in which an input keeps only its newest label.

    Router     conversation            -> p(a local answer would be good)
    Validator  conversation, answer    -> p(this answer is good)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch

from finch.conversation import Conversation
from finch.models.encoder import EncoderClassifier, EncoderConfig
from finch.models.online import OnlineLearner, Reservoir, TrainConfig, pad_batch
from finch.models.tokenizer import FinchTokenizer
from finch.text import normalise

# 1e-4 learns the router's easy separations within ~40 examples; the validator's matching task
# reached held-out AUROC 0.81 at 1e-4 and 0.88 at 3e-4 after the same 1,800 updates (Banking77).
CLASSIFIER_TRAIN = TrainConfig(lr=3e-4)
EVIDENCE_LR_SCALE = 300.0


class OnlineClassifier(OnlineLearner):
    """Replay items are ``[ids, features]``; ``features`` is empty unless the config asks for some."""

    def __init__(
        self, config: EncoderConfig, tokenizer: FinchTokenizer, train: TrainConfig = CLASSIFIER_TRAIN, seed: int = 0
    ) -> None:
        torch.manual_seed(seed)
        super().__init__(EncoderClassifier(config), train, seed)
        self.config = config
        self.tokenizer = tokenizer
        self.replay = {label: Reservoir(train.replay_capacity // 2, random.Random(seed + label)) for label in (0, 1)}

    def param_groups(self) -> list[dict[str, Any]]:
        # AdamW moves each weight by about lr per step: at the body's rate the evidence weights
        # would need thousands of steps to move a logit from -2 to +3. They are a handful of
        # weights on well-scaled inputs and learn safely at a far higher rate.
        module = self.module
        evidence = list(module.evidence.parameters()) if module.evidence is not None else []
        evidence_ids = {id(p) for p in evidence}
        body = [p for p in module.parameters() if id(p) not in evidence_ids]
        groups = [{"params": body, "lr_scale": 1.0}]
        if evidence:
            groups.append({"params": evidence, "lr_scale": EVIDENCE_LR_SCALE, "weight_decay": 0.0})
        return groups

    @torch.no_grad()
    def probabilities(
        self, inputs: list[list[int]], features: list[list[float]] | None = None, prior_logit: float = 0.0
    ) -> list[float]:
        self.module.eval()
        x = pad_batch(inputs, self.config.pad_id, self.device)
        logits, _ = self.module(x, features=self._features(features))
        return torch.sigmoid(logits + prior_logit).tolist()

    def update_ids(self, ids: list[int], label: int, features: list[float] | None = None) -> float:
        """One step per ``steps_per_example`` on this example and a replay sample; NaN in a batch
        (``begin_batch``), whose loss comes at its end."""
        label = int(bool(label))
        self.remember(ids, label, features)
        item = [ids, list(features or [])]
        if self.pending is not None:
            self.pending.append((item, label))
            return math.nan
        losses = [self._optimise(lambda: self._batch_loss(item, label)) for _ in range(self.train.steps_per_example)]
        return sum(losses) / len(losses)

    def remember(self, ids: list[int], label: int, features: list[float] | None = None) -> None:
        """Put an example in replay without a step. Labels drift as the generator learns (a question
        whose local answer was bad yesterday may be good today), so an input keeps only its newest label."""
        for reservoir in self.replay.values():
            reservoir.items = [item for item in reservoir.items if item[0] != ids]
        self.replay[int(bool(label))].add([ids, list(features or [])])

    def _batch_loss(self, item: list[Any], label: int) -> torch.Tensor:
        half = self.train.replay_per_step // 2
        batch = [(item, label)]
        batch += [(x, 0) for x in self.replay[0].sample(half + (label == 1))]
        batch += [(x, 1) for x in self.replay[1].sample(half + (label == 0))]
        return self._loss_on(batch)

    def _loss_on(self, batch: list[tuple[list[Any], int]]) -> torch.Tensor:
        inputs = pad_batch([x[0] for x, _ in batch], self.config.pad_id, self.device)
        features = self._features([x[1] for x, _ in batch])
        targets = torch.tensor([y for _, y in batch], dtype=torch.float32, device=self.device)
        _, loss = self.module(inputs, targets, features=features)
        assert loss is not None
        return loss

    def _pending_loss(self, pending: list[Any]) -> torch.Tensor:
        half = self.train.replay_per_step // 2
        batch = [
            *pending,
            *((x, 0) for x in self.replay[0].sample(half)),
            *((x, 1) for x in self.replay[1].sample(half)),
        ]
        return self._loss_on(batch)

    def _features(self, rows: list[list[float]] | None) -> torch.Tensor | None:
        if not self.config.n_features or rows is None:
            return None
        width = self.config.n_features
        padded = [list(r)[:width] + [0.0] * (width - len(r)) for r in rows]
        return torch.tensor(padded, dtype=torch.float32, device=self.device)

    def replay_state(self) -> dict[str, Any]:
        return {str(label): reservoir.state() for label, reservoir in self.replay.items()}

    def load_replay_state(self, state: dict[str, Any]) -> None:
        for label, reservoir in self.replay.items():
            reservoir.load_state(state[str(label)])


class Router(OnlineClassifier):
    kind = "router"

    def encode(self, conversation: Conversation) -> list[int]:
        return self.tokenizer.render(conversation, self.config.max_len, cue_answer=False)

    def p_local(self, conversations: list[Conversation], features: list[list[float]] | None = None) -> list[float]:
        """Probability that a local answer to each conversation would be good."""
        return self.probabilities([self.encode(c) for c in conversations], features, self.prior_logit())

    def prior_logit(self) -> float:
        """The log-odds of the labels seen. Balanced replay trains the router as if good and bad
        local answers were equally common; adding this restores their real frequency, so that
        "p > 0.95" means what it says (with 85% good labels, a question that is answered well 97%
        of the time would otherwise score 0.85)."""
        good, bad = self.replay[1].seen, self.replay[0].seen
        if good + bad < 20:
            return 0.0
        share = min(max(good / (good + bad), 0.02), 0.98)
        return math.log(share / (1 - share))

    def learn(self, conversation: Conversation, local_was_good: bool, features: list[float] | None = None) -> float:
        return self.update_ids(self.encode(conversation), int(local_was_good), features)


class Validator(OnlineClassifier):
    """Judges (conversation, answer) pairs, optionally with numeric evidence (``features``).

    Besides the labels it is given, it makes its own negatives: each good pair also yields the same
    conversation with ``contrast`` other known-good answers that differ from this one (label 0). On
    Banking77 this lifts held-out AUROC markedly (BENCHMARKS.md); without it the model memorises
    which utterances it saw rather than learning what makes an answer fit a question.
    """

    kind = "validator"
    contrast = 2

    def __init__(
        self, config: EncoderConfig, tokenizer: FinchTokenizer, train: TrainConfig = CLASSIFIER_TRAIN, seed: int = 0
    ) -> None:
        super().__init__(config, tokenizer, train, seed)
        self.good_answers = Reservoir(512, random.Random(seed + 7))

    def encode(self, conversation: Conversation, answer: str) -> list[int]:
        return self.tokenizer.render_pair(conversation, answer, self.config.max_len)

    def p_good(self, pairs: list[tuple[Conversation, str]], features: list[list[float]] | None = None) -> list[float]:
        """Probability that each (conversation, answer) is a good answer."""
        return self.probabilities([self.encode(c, a) for c, a in pairs], features)

    def learn(
        self,
        conversation: Conversation,
        answer: str,
        good: bool,
        features: list[float] | None = None,
        featurize: Callable[[str], list[float]] | None = None,
    ) -> float:
        """``featurize(other_answer)`` gives the evidence for a contrast negative, when features are used."""
        if good:
            key = normalise(answer)
            others = [a for a in self.good_answers.sample(4 * self.contrast) if normalise(a) != key]
            for other in others[: self.contrast]:
                self.remember(self.encode(conversation, other), 0, featurize(other) if featurize else None)
            self.good_answers.add(answer)
        return self.update_ids(self.encode(conversation, answer), int(good), features)

    def replay_state(self) -> dict[str, Any]:
        return {**super().replay_state(), "good_answers": self.good_answers.state()}

    def load_replay_state(self, state: dict[str, Any]) -> None:
        super().load_replay_state(state)
        self.good_answers.load_state(state["good_answers"])
