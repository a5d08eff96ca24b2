"""Text that ships with finch's dependencies: the English conversations of ``chatterbot-corpus``.

It is the teacher simulator's default knowledge and the seed text of finch's tokenizer.
"""

from __future__ import annotations

from importlib import resources


def chatterbot_pairs() -> list[tuple[str, str]]:
    """(message, reply) pairs from every English conversation, in file order."""
    import yaml

    root = resources.files("chatterbot_corpus").joinpath("data", "english")
    pairs: list[tuple[str, str]] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".yml"):
            continue
        data = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            turns = [str(t) for t in conversation if isinstance(t, str | int | float)]
            pairs.extend(zip(turns, turns[1:], strict=False))
    return pairs
