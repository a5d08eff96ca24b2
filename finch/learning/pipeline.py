"""The decision, written once: a question's candidate answers, scored in the order finch tries them.

    1. Claude's repeated answer   Claude's stored answer to this same question, unless they differ (P(good) 1)
       -- the router's floor: past here, a question the router finds hopeless is not attempted --
    2. the recalled answer        the nearest past questions' vote
    3. the written answer         the generator's, when it says something the recalled one does not

A ``Proposal`` yields them lazily, each scored, cheapest first. Both processes run it on the same
kind of state (a ``Scorer``: the three models, the memory and the stacker; and Claude's consistent
answers):

- the request path (``finch.learning.serving``) stops at the first servable candidate that reaches
  the operating point and serves it, so the generator writes only when recall is not enough;
- the trainer (``finch.learning.ensemble``) takes them all, judges each against Claude's answer and
  learns, and the bound counts the ``Attempt``: at every threshold, the first servable candidate
  that reaches it, which is what the request path would serve there.

A candidate is servable when it fits the request's ``max_tokens``, comes before the router's floor,
and may be shown to the request's end user (``Audience``: an answer Claude gave other end users is
shared only once enough of them got it, ``finch.policy.privacy``); a written answer that ran to its
token limit was cut short and is no candidate at all.
``tests/test_pipeline.py`` replays a stream through both sides and checks that they agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from finch.conversation import Conversation, question_key
from finch.learning.consistency import Consistency
from finch.learning.memory import Memory, Neighbourhood
from finch.learning.scorer import Scorer
from finch.policy.decide import ROUTER_FLOOR, Attempt, Candidate, Source
from finch.policy.privacy import DEFAULT_SHARE_AFTER_USERS, shareable


@dataclass(frozen=True)
class Audience:
    """Whom a question's answer is for: its end user ("" when the request named none; a digest
    otherwise) and how many end users must have been given an answer before another one is."""

    end_user: str = ""
    share_after_users: int = DEFAULT_SHARE_AFTER_USERS

    def may_see(self, holders: frozenset[str]) -> bool:
        return shareable(holders, self.end_user, self.share_after_users)


@dataclass(frozen=True)
class Scored:
    """A candidate, with what learning needs of it besides its score."""

    candidate: Candidate
    vec: torch.Tensor | None  # its answer embedding (None for Claude's repeated answer)
    evidence: list[float]  # the memory's features for it (the validator's and stacker's inputs)
    stacked: list[float]  # the stacker's inputs
    servable: bool  # fits the request, and is not past the router's floor


class Proposal:
    """One question's candidates, scored lazily, in the order the decision tries them.

    ``write()`` is the generator's answer within the token limit: "" when it ran to the limit, None
    when it ran past its time (the request path's deadline). ``everything``: go on past the router's
    floor (the trainer learns from every candidate; past the floor none is servable)."""

    def __init__(
        self,
        scorer: Scorer,
        consistency: Consistency,
        conversation: Conversation,
        *,
        max_tokens: int,
        retrieval: bool,
        write: Callable[[], str | None],
        everything: bool = False,
        audience: Audience = Audience(),
    ) -> None:
        self.scorer = scorer
        self.consistency = consistency
        self.conversation = conversation
        self.max_tokens = max_tokens
        self.retrieval = retrieval
        self.write = write
        self.everything = everything
        self.audience = audience
        self.scored: list[Scored] = []
        self.question_vec: torch.Tensor | None = None
        self.hood: Neighbourhood | None = None
        self.p_router: float | None = None
        self.timed_out = False  # the generator ran past its time
        self.withheld: list[Candidate] = []  # candidates that were other end users' alone (``Audience``)

    @property
    def hopeless(self) -> bool:
        return self.p_router is not None and self.p_router < ROUTER_FLOOR

    def attempt(self) -> Attempt:
        """The servable candidates scored so far, in order: the record the bound counts."""
        return Attempt(tuple(s.candidate for s in self.servable()), self.p_router)

    def servable(self) -> list[Scored]:
        return [s for s in self.scored if s.servable]

    def __iter__(self) -> Iterator[Scored]:
        scorer, conversation = self.scorer, self.conversation
        key = question_key(conversation)
        repeated = self.consistency.answer(key)
        if repeated is not None:  # Claude gave this answer to this question, consistently
            candidate = Candidate(repeated, Source.REPEAT, 1.0)
            servable = self._fits(repeated) and self._may_see(candidate, self.consistency.holders(key))
            yield self._add(candidate, None, [], [], servable)
        self.question_vec = scorer.question_vec(conversation)
        self.hood = scorer.memory.around(self.question_vec)
        self.p_router = scorer.p_router(conversation, self.hood)
        if self.hopeless and not self.everything:
            return
        before: list[torch.Tensor] = []
        found = recalled(scorer.memory, self.hood, self.retrieval)
        if found is not None:
            text, vec = found
            before.append(vec)
            yield self._score(Source.RECALLED, text, vec)
        written = self.write()
        if written is None:
            self.timed_out = True
            return
        if written.strip():
            vec = scorer.embed_answer(written)
            extra = written_candidate(scorer.memory, written, vec, before, self.retrieval)
            if extra is not None:
                yield self._score(Source.WRITTEN, *extra)

    def _score(self, source: str, text: str, vec: torch.Tensor) -> Scored:
        assert self.p_router is not None
        memory = self.scorer.memory
        agreeing = memory.agreeing(vec)  # one scan of the memory: for its score and for whom it is
        p_good, p_validator, evidence, stacked = self.scorer.score(
            self.conversation, self.hood, self.p_router, text, vec, agreeing
        )
        candidate = Candidate(text, source, p_good, p_validator)
        servable = not self.hopeless and self._fits(text) and self._may_see(candidate, memory.holders(vec, agreeing))
        return self._add(candidate, vec, evidence, stacked, servable)

    def _add(
        self,
        candidate: Candidate,
        vec: torch.Tensor | None,
        evidence: list[float],
        stacked: list[float],
        servable: bool,
    ) -> Scored:
        scored = Scored(candidate, vec, evidence, stacked, servable)
        self.scored.append(scored)
        return scored

    def _may_see(self, candidate: Candidate, holders: frozenset[str]) -> bool:
        if self.audience.may_see(holders):
            return True
        self.withheld.append(candidate)
        return False

    def _fits(self, answer: str) -> bool:
        return len(self.scorer.tokenizer.encode(answer)) <= self.max_tokens


def recalled(memory: Memory, hood: Neighbourhood | None, retrieval: bool) -> tuple[str, torch.Tensor] | None:
    """The answer the nearest past questions vote for: the first model candidate tried."""
    return memory.recall(hood) if retrieval else None


def written_candidate(
    memory: Memory, written: str, written_vec: torch.Tensor, before: list[torch.Tensor], retrieval: bool
) -> tuple[str, torch.Tensor] | None:
    """The generator's answer, as the next candidate when it says something the ones before do not.

    A written answer that says what one of Claude's stored answers says is replaced by that
    answer: the same meaning in Claude's own words, so a small generator's slips (a repeated or
    dropped phrase, which the embedding barely notices) never reach a user."""
    if retrieval:
        written, written_vec = memory.same_answer(written_vec) or (written, written_vec)
    if any(float(written_vec @ vec) >= memory.agree_cos for vec in before):
        return None
    return written, written_vec
