"""Claude's own consistency: what Claude has answered to exactly this question before.

A question Claude has answered before is about as safe to answer from memory as a local answer
gets: when it comes back, Claude's stored words are its first candidate, scored 1.0. Whether
such repeats are safe to serve is measured, not assumed: every repeat forwarded is judged ("would
the stored answer have been right for this repeat?"), from a question's second sighting on, and
the repeats hold a certificate of their own in the bound (``finch.policy.bound``, its first
region), served and audited like any other answer. An exact cache serves the same answers
unjudged. A question whose answers differ (a poem, a joke, anything about "now") is never answered
locally: there is no one right answer to repeat. "Differ" allows for the judge's own mistakes:
before it has learned Claude's framing ("Sure.", "Hope that helps!") it calls about one rewording
in ten different, so a question counts as varying while more than one in five of its later
answers disagreed with the first.

Kept for the most recent ``capacity`` distinct questions; "exactly" means the same conversation
after the judge's normalisation (case, spacing, punctuation).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from finch.policy.privacy import DEFAULT_SHARE_AFTER_USERS, keep_holders

_DISAGREE_SHARE = 0.2  # of later answers that may disagree with the first before a question varies


@dataclass
class _Record:
    text: str  # Claude's first answer: the one repeated
    agreed: int = 0  # later answers the judge found equal to it
    disagreed: int = 0  # and those it did not
    # The end users given the first answer or one the judge found equal (finch.policy.privacy), up
    # to the number past which it is everyone's.
    holders: list[str] = field(default_factory=list)

    @property
    def varies(self) -> bool:
        return self.disagreed > _DISAGREE_SHARE * (self.agreed + self.disagreed)


class Consistency:
    def __init__(self, capacity: int = 4096, share_after_users: int = DEFAULT_SHARE_AFTER_USERS) -> None:
        self.capacity = capacity
        self.share_after_users = share_after_users
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def answer(self, key: str) -> str | None:
        """Claude's stored answer to this question, unless Claude's answers to it differ."""
        record = self._records.get(key)
        if record is None or record.varies:
            return None
        return record.text

    def varies(self, key: str) -> bool:
        record = self._records.get(key)
        return record is not None and record.varies

    def forget(self, key: str) -> None:
        self._records.pop(key, None)

    def holders(self, key: str) -> frozenset[str]:
        """The end users Claude gave its stored answer to this question to."""
        record = self._records.get(key)
        return frozenset(record.holders) if record is not None else frozenset()

    def observe(self, key: str, answer: str, agree: Callable[[str, str], bool], end_user: str = "") -> bool | None:
        """Claude answered this question again, to ``end_user``. Returns whether the answer agrees
        with the first (None for a first answer)."""
        record = self._records.get(key)
        if record is None:
            self._records[key] = _Record(answer, holders=[end_user])
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)
            return None
        self._records.move_to_end(key)
        agrees = agree(record.text, answer)
        if agrees:
            record.agreed += 1
            keep_holders(record.holders, end_user, self.share_after_users)
        else:
            record.disagreed += 1
        return agrees

    def to_state(self) -> list[list[Any]]:
        return [[key, r.text, r.agreed, r.disagreed, r.holders] for key, r in self._records.items()]

    @classmethod
    def from_state(
        cls, state: list[list[Any]] | None, capacity: int = 4096, share_after_users: int = DEFAULT_SHARE_AFTER_USERS
    ) -> Consistency:
        consistency = cls(capacity, share_after_users)
        for key, text, agreed, disagreed, *holders in state or []:
            # A record from before end users were kept is the namespace's own ("").
            consistency._records[key] = _Record(text, agreed, disagreed, list(holders[0] if holders else [""]))
        return consistency
