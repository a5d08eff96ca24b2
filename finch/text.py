"""What "the same words" means everywhere in finch: case and runs of whitespace do not count."""

from __future__ import annotations


def normalise(text: str) -> str:
    return " ".join(text.lower().split())
