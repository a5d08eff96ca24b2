"""Framing: the clauses Claude wraps around an answer ("Sure.", "I hope that helps.") that say nothing.

Two answers with the same content and different framing should agree; two answers with different
content and the same framing should not. On short answers the framing moves a sentence embedding
more than the content does, so the judge compares answers with their framing taken out.

Framing is learned, not listed: a clause is framing once it has appeared beside many *different*
rests of answer (``min_contexts`` distinct sets of the other clauses) and no other clause keeps it
company in most of its answers. A content clause has partners: the rest of its answer comes back
with it, whatever framing surrounds them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from finch.text import normalise

_CLAUSE_END = re.compile(r"(?<=[.!?:;])\s+")
_MAX_CLAUSE_CHARS = 120  # framing is short; long clauses are content and are not tracked
_MAX_TRACKED = 5_000  # clauses being counted; past this the least seen half is forgotten
_MAX_PARTNERS = 64  # companions counted per clause: enough to see whether one of them always comes along


def clauses(text: str) -> list[str]:
    return [c for c in _CLAUSE_END.split(text.strip()) if c]


@dataclass
class _Seen:
    times: int = 0
    rests: set[int] = field(default_factory=set)  # distinct sets of the other clauses, hashed
    partners: Counter[str] = field(default_factory=Counter)  # how often each other clause came along

    def is_framing(self, min_contexts: int) -> bool:
        most = max(self.partners.values(), default=0)
        return len(self.rests) >= min_contexts and most * 2 <= self.times


class Framing:
    def __init__(self, min_contexts: int = 6, known: Iterable[str] = ()) -> None:
        self.min_contexts = min_contexts
        self.known: frozenset[str] = frozenset(known)  # replaced whole, so readers need no lock
        self._seen: dict[str, _Seen] = {}

    def content(self, text: str) -> str:
        """``text`` without its framing clauses; the text itself when nothing else is left.

        A framing clause glued to the content without a sentence end ("Everywhere I hope that
        helps.") is taken off the ends too: it is still framing, and left in, it alone can move a
        short answer's embedding past the judge's threshold."""
        known = self.known
        if not known:
            return text
        kept = " ".join(c for c in clauses(text) if normalise(c) not in known)
        words = kept.split()
        trimmed = True
        while trimmed and words:
            trimmed = False
            for clause in known:
                size = len(clause.split())
                if len(words) > size and normalise(" ".join(words[-size:])) == clause:
                    words, trimmed = words[:-size], True
                elif len(words) > size and normalise(" ".join(words[:size])) == clause:
                    words, trimmed = words[size:], True
        return " ".join(words) if words else text

    def observe(self, answer: str) -> bool:
        """Count one of Claude's answers; True when it taught a new framing clause."""
        keys = list(dict.fromkeys(normalise(c) for c in clauses(answer)))
        known = self.known
        content = [k for k in keys if k not in known]
        learned = []
        for clause in content:
            if len(clause) > _MAX_CLAUSE_CHARS:
                continue
            others = [k for k in content if k != clause]
            seen = self._seen.setdefault(clause, _Seen())
            seen.times += 1
            seen.rests.add(hash(frozenset(others)))
            for other in others:
                if other in seen.partners or len(seen.partners) < _MAX_PARTNERS:
                    seen.partners[other] += 1
            if seen.is_framing(self.min_contexts):
                learned.append(clause)
        if len(self._seen) > _MAX_TRACKED:
            self._forget_rarest()
        if not learned:
            return False
        for clause in learned:
            del self._seen[clause]
        self.known = known | frozenset(learned)
        return True

    def _forget_rarest(self) -> None:
        ranked = sorted(self._seen, key=lambda k: self._seen[k].times)
        for clause in ranked[: len(ranked) // 2]:
            del self._seen[clause]
