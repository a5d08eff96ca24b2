"""Claude's own consistency: what Claude has answered to exactly this question before.

A question Claude has answered twice in words the judge finds equal is about as safe to answer
from memory as a local answer gets: the next answer is served in Claude's stored words, scored 1.0
(it still passes through the bound and its audits like any other). A question whose answers
differ (a poem, a joke, anything about "now") is never answered locally: there is no one right
answer to repeat.

Kept for the most recent ``capacity`` distinct questions; "exactly" means the same conversation
after the judge's normalisation (case, spacing, punctuation).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MIN_ANSWERS = 2  # Claude's answers that must agree before one is repeated


@dataclass
class _Record:
    answers: int  # how many times Claude answered this question
    text: str  # Claude's first answer: the one repeated
    varies: bool  # did a later answer disagree with it?


class Consistency:
    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def answer(self, key: str) -> str | None:
        """Claude's answer to this question, when Claude has given it consistently."""
        record = self._records.get(key)
        if record is None or record.varies or record.answers < MIN_ANSWERS:
            return None
        return record.text

    def varies(self, key: str) -> bool:
        record = self._records.get(key)
        return record is not None and record.varies

    def observe(self, key: str, answer: str, agree: Callable[[str, str], bool]) -> bool | None:
        """Claude answered this question again. Returns whether the answer agrees with the first
        (None for a first answer)."""
        record = self._records.get(key)
        if record is None:
            self._records[key] = _Record(1, answer, False)
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)
            return None
        self._records.move_to_end(key)
        agrees = agree(record.text, answer)
        record.answers += 1
        record.varies = record.varies or not agrees
        return agrees

    def to_state(self) -> list[list[Any]]:
        return [[key, r.answers, r.text, r.varies] for key, r in self._records.items()]

    @classmethod
    def from_state(cls, state: list[list[Any]] | None, capacity: int = 4096) -> Consistency:
        consistency = cls(capacity)
        for key, answers, text, varies in state or []:
            consistency._records[key] = _Record(answers, text, varies)
        return consistency
