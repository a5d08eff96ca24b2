"""Retrieval memory: the questions finch has learned from and Claude's answers, as sentence embeddings.

For a question q and a candidate answer a it gives the validator its evidence:

    support   highest similarity of q to a past question whose answer agrees with a
    conflict  highest similarity of q to a past question whose answer does not agree with a
    vote      share of the nearest past questions' weighted vote that backs a

A paraphrase of a question Claude answered with a gets high support; a near miss (similar words,
a different answer) gets high conflict too, and the validator learns how much of a margin to ask.
These are the frozen features DESIGN.md §5 allows beside the models' own weights.

Similarities also enter as ``closeness``, a log scale that spreads out the top of the range: on
the raw scale an exact repeat (1.0) is barely apart from a paraphrase (0.9), so the models, whose
evidence is a linear term, could not learn that a question asked before is the safest case there
is. Measured: in the last quarter of a Banking77 stream a quarter of exact repeats were forwarded
although their recalled answer was good.

Storage is a fixed-size ring of rows. The trainer writes a row and then publishes a new count;
readers on the request path only look at rows below the count they read, so no lock is needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from finch.conversation import Conversation
from finch.models.tokenizer import atomic_write_bytes

N_FEATURES = 7  # the validator's evidence
N_ROUTER_FEATURES = 4  # the router's
_DIM = 384  # all-MiniLM-L6-v2
# Neighbours vote with weight exp((similarity − nearest similarity) / T). Measured on Banking77
# (benchmarks/recall.py, BENCHMARKS.md): a near-exact match outweighs a crowd of looser neighbours,
# while neighbours about as close as the nearest still vote as equals. Weighting by similarity
# itself let nine loose neighbours outvote an exact repeat: top-1 recall 78% against 86% at T=0.05.
VOTE_TEMPERATURE = 0.05


def vote_weights(similarities: torch.Tensor, temperature: float = VOTE_TEMPERATURE) -> torch.Tensor:
    """Each neighbour's weight in the vote, from similarities sorted nearest first: the nearest weighs 1."""
    return torch.exp((similarities - similarities[0]) / temperature)


def closeness(similarity: float, floor: float = 1e-4) -> float:
    """Similarity on a log scale in [0, 1]: 1.0 -> 1, 0.99 -> 0.5, 0.9 -> 0.25, 0.8 -> 0.17."""
    distance = max(1.0 - similarity, 0.0) + floor
    return min(max(math.log(1.0 / distance) / math.log(1.0 / floor), 0.0), 1.0)


@dataclass(frozen=True)
class Neighbourhood:
    """One question against the memory as it stood when asked: rows written later are not in it."""

    similarity: torch.Tensor  # (n,) to every stored question
    rows: torch.Tensor  # the nearest rows, nearest first
    values: torch.Tensor  # their similarities
    weights: torch.Tensor  # their weights in the vote


def question_text(conversation: Conversation, max_chars: int = 1000) -> str:
    """What a conversation asks, for embedding: its turns, newest last, cut from the left."""
    return "\n".join(text for _, text in conversation.turns)[-max_chars:]


class Memory:
    def __init__(self, agree_threshold: float, capacity: int = 20_000) -> None:
        self.agree_cos = 1.0 - agree_threshold  # answers agree when cos ≥ this (the judge's τ)
        self.capacity = capacity
        self._questions = torch.zeros(capacity, _DIM)
        self._answers = torch.zeros(capacity, _DIM)
        self._texts: list[str] = [""] * capacity  # Claude's answers, for recall
        self._users: list[str] = [""] * capacity  # whom each was given to (finch.policy.privacy)
        self._count = 0  # rows written, ever; the ring holds the newest `capacity`

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    def add(self, question: torch.Tensor, answer: torch.Tensor, text: str = "", end_user: str = "") -> None:
        row = self._count % self.capacity
        self._questions[row] = question
        self._answers[row] = answer
        self._texts[row] = text
        self._users[row] = end_user
        self._count += 1  # published after the row is whole

    def forget(self, question: torch.Tensor, same: float = 0.999) -> int:
        """Remove the rows of this very question (its embedding, to rounding); returns how many. The
        rows kept close up, oldest first, so the ring goes on from their end."""
        n = len(self)
        if n == 0:
            return 0
        keep = ((self._questions[:n] @ question) < same).nonzero().flatten()
        kept = int(keep.shape[0])
        questions, answers = self._questions.clone(), self._answers.clone()
        questions[:kept], answers[:kept] = self._questions[keep], self._answers[keep]
        texts, users = [self._texts[i] for i in keep.tolist()], [self._users[i] for i in keep.tolist()]
        self._texts = texts + [""] * (self.capacity - kept)
        self._users = users + [""] * (self.capacity - kept)
        self._questions, self._answers, self._count = questions, answers, kept
        return n - kept

    def reembed(self, embed_answers: Callable[[list[str]], torch.Tensor], batch: int = 128) -> None:
        """Embed the stored answers again (the judge learned new framing to leave out)."""
        n = len(self)
        answers = self._answers.clone()
        for start in range(0, n, batch):
            texts = self._texts[start : min(n, start + batch)]
            answers[start : start + len(texts)] = embed_answers(texts)
        self._answers = answers  # one reference swap: readers see the old rows or the new

    def around(self, question: torch.Tensor, k: int = 10) -> Neighbourhood | None:
        """``question`` against the memory as it stands, for every reading of it below; None when
        memory is empty. One scan of the stored questions serves the whole request."""
        n = len(self)
        if n == 0:
            return None
        similarity = self._questions[:n] @ question  # (n,)
        top = torch.topk(similarity, min(k, n))
        return Neighbourhood(similarity, top.indices, top.values, vote_weights(top.values))

    def recall(self, hood: Neighbourhood | None) -> tuple[str, torch.Tensor] | None:
        """The answer the nearest past questions vote for: each neighbour backs every neighbour whose
        answer agrees with theirs, the closer ones with far more weight (see ``VOTE_TEMPERATURE``);
        the winner's own answer is returned with its embedding. None when memory is empty."""
        if hood is None:
            return None
        best = self._vote(hood)[0]
        text = self._texts[best]
        return (text, self._answers[best].clone()) if text else None

    def same_answer(self, answer: torch.Tensor) -> tuple[str, torch.Tensor] | None:
        """The stored answer of Claude's closest to ``answer``, when the two agree; else None."""
        n = len(self)
        if n == 0:
            return None
        similarity = self._answers[:n] @ answer  # (n,)
        best = int(similarity.argmax())
        if float(similarity[best]) < self.agree_cos or not self._texts[best]:
            return None
        return self._texts[best], self._answers[best].clone()

    def agreeing(self, answer: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """Which of the first ``n`` stored answers (all) agree with ``answer``, by the judge's τ:
        (n,) bools. One scan of the memory, for ``features`` and ``holders`` alike."""
        return (self._answers[: len(self) if n is None else n] @ answer) >= self.agree_cos

    def holders(self, answer: torch.Tensor, agreeing: torch.Tensor | None = None) -> frozenset[str]:
        """The end users Claude gave ``answer`` to, in words the judge finds equal (its stored
        answers that agree with it, ``agreeing`` when already known): whom it belongs to
        (``finch.policy.privacy``)."""
        agrees = self.agreeing(answer) if agreeing is None else agreeing
        return frozenset(self._users[row] for row in agrees.nonzero().flatten().tolist())

    def question_features(self, hood: Neighbourhood | None) -> list[float]:
        """The router's evidence: [similarity of the nearest past question, share of the nearest
        neighbours' weighted vote won by the leading answer, has memory, closeness of the nearest]."""
        if hood is None:
            return [0.0] * N_ROUTER_FEATURES
        _, share = self._vote(hood)
        nearest = float(hood.values[0])
        return [nearest, share, 1.0, closeness(nearest)]

    def _vote(self, hood: Neighbourhood) -> tuple[int, float]:
        """(row of the winning neighbour, the winner's share of the vote)."""
        answers = self._answers[hood.rows]  # (k, D)
        agree = (answers @ answers.T) >= self.agree_cos  # (k, k)
        votes = agree.float() @ hood.weights  # (k,) weighted support of each answer
        winner = int(votes.argmax())
        return int(hood.rows[winner]), float(votes[winner] / hood.weights.sum())

    def features(
        self, hood: Neighbourhood | None, candidate: torch.Tensor, agreeing: torch.Tensor | None = None
    ) -> list[float]:
        """[support, conflict, support − conflict, has memory, closeness of support, closeness of
        conflict, share of the nearest neighbours' weighted vote that backs the candidate].
        ``agreeing``: the rows that agree with the candidate, when already known."""
        if hood is None:
            return [0.0] * N_FEATURES
        similarity = hood.similarity
        agrees = self.agreeing(candidate, similarity.shape[0]) if agreeing is None else agreeing  # (n,)
        support = float(similarity[agrees].max()) if bool(agrees.any()) else 0.0
        conflict = float(similarity[~agrees].max()) if bool((~agrees).any()) else 0.0
        vote = float(hood.weights[agrees[hood.rows]].sum() / hood.weights.sum())
        return [support, conflict, support - conflict, 1.0, closeness(support), closeness(conflict), vote]

    def save(self, path: Path) -> None:
        n = len(self)
        tensors = {
            "questions": self._questions[:n].contiguous(),
            "answers": self._answers[:n].contiguous(),
            "count": torch.tensor([self._count]),
        }
        tmp = path.with_suffix(".build")
        metadata = {"texts": json.dumps(self._texts[:n]), "users": json.dumps(self._users[:n])}
        save_file(tensors, str(tmp), metadata=metadata)
        atomic_write_bytes(path, tmp.read_bytes())
        tmp.unlink()

    def serving_state(self) -> dict[str, object]:
        """The rows as they stand, for the serving snapshot (``finch.learning.snapshot``)."""
        n = len(self)
        # Copies of the rows in use: torch.save of a slice writes the whole ring it views (61 MB
        # for 20,000 empty rows, written at every publish).
        questions, answers = self._questions[:n].clone(), self._answers[:n].clone()
        return {"questions": questions, "answers": answers, "texts": self._texts[:n], "users": self._users[:n]}

    @classmethod
    def serving(cls, state: dict[str, object], agree_threshold: float) -> Memory:
        """A read-only memory over a snapshot's rows (nothing is added to it, so it holds no spare ring)."""
        questions, answers = state["questions"], state["answers"]
        assert isinstance(questions, torch.Tensor) and isinstance(answers, torch.Tensor)
        memory = cls(agree_threshold, capacity=0)
        memory.capacity = memory._count = questions.shape[0]
        memory._questions, memory._answers, memory._texts = questions, answers, list(state["texts"])  # type: ignore[call-overload]
        # A snapshot from before end users were kept: every row is the namespace's own.
        memory._users = list(state.get("users") or [""] * memory._count)  # type: ignore[call-overload]
        return memory

    def load(self, path: Path) -> None:
        tensors = load_file(str(path))
        n = min(tensors["questions"].shape[0], self.capacity)
        self._questions[:n] = tensors["questions"][:n]
        self._answers[:n] = tensors["answers"][:n]
        self._count = int(tensors["count"][0])  # equals n unless the ring had wrapped
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        texts, users = json.loads(metadata.get("texts", "[]")), json.loads(metadata.get("users", "[]"))
        self._texts[: min(n, len(texts))] = texts[:n]
        self._users[: min(n, len(users))] = users[:n]  # none in a file from before end users were kept
