"""A plain-text conversation: the form in which a request can be learned from or answered locally."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from finch.text import normalise


@dataclass(frozen=True)
class Conversation:
    system: str
    turns: tuple[tuple[str, str], ...]  # (role, text), in order

    def to_json(self) -> str:
        return json.dumps({"system": self.system, "turns": [list(t) for t in self.turns]}, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str) -> Conversation:
        data = json.loads(raw)
        return cls(system=data["system"], turns=tuple((r, t) for r, t in data["turns"]))


def text_of(content: Any) -> str | None:
    """The text of a message's content, or None when it holds anything but text blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = []
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            return None
        parts.append(block["text"])
    return "".join(parts)


def question_key(conversation: Conversation) -> str:
    """What "exactly this question" means: the same conversation after the judge's normalisation."""
    return normalise(conversation.to_json())
