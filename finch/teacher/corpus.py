"""The teacher's knowledge: question/answer pairs, and how a question finds its answer.

Lookup order: the exact question (after normalising case and spacing), else the most similar
question by word overlap (cosine over word sets) when it is similar enough, else a generic answer.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from finch.bundled import chatterbot_pairs
from finch.text import normalise

GENERIC_ANSWER = "I'm not sure I can help with that. Could you tell me a little more about what you need?"
_MIN_SIMILARITY = 0.5  # below this, a neighbour's answer would more likely mislead than help
_WORD = re.compile(r"[a-z0-9']+")
_REWORDINGS = (
    "{answer}",
    "Sure. {answer}",
    "Here is what I can tell you: {answer}",
    "Good question. {answer}",
    "{answer} I hope that helps.",
)


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


class Corpus:
    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.questions: list[str] = []
        self.answers: list[str] = []
        self._exact: dict[str, int] = {}
        self._index: dict[str, list[int]] = defaultdict(list)
        self._sizes: list[int] = []
        for question, answer in pairs:
            key = normalise(question)
            if not key or key in self._exact:
                continue  # the first answer to a question is the one the teacher keeps
            i = len(self.questions)
            self.questions.append(question)
            self.answers.append(answer)
            self._exact[key] = i
            words = _words(question)
            self._sizes.append(len(words))
            for word in words:
                self._index[word].append(i)

    def __len__(self) -> int:
        return len(self.questions)

    def answer(self, question: str) -> str:
        exact = self._exact.get(normalise(question))
        if exact is not None:
            return self.answers[exact]
        nearest = self.nearest(question)
        return self.answers[nearest] if nearest is not None else GENERIC_ANSWER

    def nearest(self, question: str) -> int | None:
        words = _words(question)
        if not words:
            return None
        overlap: dict[int, int] = defaultdict(int)
        for word in words:
            for i in self._index.get(word, ()):
                overlap[i] += 1
        best, best_score = None, _MIN_SIMILARITY
        for i, shared in overlap.items():
            score = shared / math.sqrt(len(words) * self._sizes[i])
            if score >= best_score:
                best, best_score = i, score
        return best


def reword(answer: str, rng: random.Random) -> str:
    """The same answer in slightly different words, as a real model varies between calls."""
    return rng.choice(_REWORDINGS).format(answer=answer)


def load_jsonl(path: Path) -> Corpus:
    pairs = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append((str(row["question"]), str(row["answer"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f'{path}:{line_no}: expected {{"question": ..., "answer": ...}}') from exc
    return Corpus(pairs)


def load_default() -> Corpus:
    """The English conversations of the ``chatterbot-corpus`` package: small, offline, real."""
    return Corpus(chatterbot_pairs())
