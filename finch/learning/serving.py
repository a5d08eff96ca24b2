"""The request path's side of learning: one serving snapshot, and the decisions made from it.

A ``Serving`` is built once per snapshot the trainer publishes (``finch.learning.snapshot``) and
then only read: its scorer, the policy's ``Standing``, Claude's consistent answers and the blocked
questions all come from the same moment of learning. The server swaps in a newer one whole between
requests, so a decision never mixes two snapshots and never waits on the trainer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch

from finch.config import Settings
from finch.conversation import Conversation, question_key
from finch.learning.consistency import Consistency
from finch.learning.memory import Memory
from finch.learning.pipeline import Audience, Proposal
from finch.learning.scorer import Scorer
from finch.learning.stacker import Stacker
from finch.models.inference import build_module
from finch.models.tokenizer import FinchTokenizer
from finch.policy import decide as policy
from finch.policy.decide import Candidate, Decision, Standing
from finch.vocabulary import Reason, Route


class Serving:
    def __init__(
        self,
        snapshot: dict[str, Any],
        config: Settings,
        tokenizer: FinchTokenizer,
        question_vec: Callable[[str], torch.Tensor],
        embed_answers: Callable[[list[str]], torch.Tensor],
    ) -> None:
        if snapshot["tokenizer"] != tokenizer.hash:
            raise ValueError("the serving snapshot was made with another tokenizer")
        self.config = config
        self.tokenizer = tokenizer
        self.generation: int = snapshot["generation"]
        self.position: dict[str, int] = dict(snapshot["position"])
        # What the status shows of it (finch.learning.status): the header's part that describes learning.
        self.published: dict[str, Any] = {key: snapshot[key] for key in ("format", "generation", "position", "status")}
        self.standing = Standing(**snapshot["standing"])
        self.blocked = frozenset(snapshot["blocked"])
        self.framing = frozenset(snapshot["framing"])
        self.consistency = Consistency.from_state(snapshot["consistency"])
        self.memory = Memory.serving(snapshot["memory"], config.judge_threshold)
        models = snapshot["models"]
        modules = {kind: build_module(kind, m["config"], m["weights"]) for kind, m in models.items()}
        self.scorer = Scorer(
            modules["router"],
            snapshot["router_prior"],
            modules["validator"],
            modules["generator"],
            tokenizer,
            self.memory,
            Stacker.from_fit(snapshot["stacker"]),
            question_vec,
            embed_answers,
        )

    @property
    def max_chars(self) -> int:
        """Conversations longer than this (about the generator's context) are never answered locally."""
        return self.scorer.generator_len * 3

    def decide(
        self,
        conversation: Conversation,
        max_tokens: int,
        draw: Callable[[], float],
        blocked_since: Collection[str] = (),
        end_user: str = "",
    ) -> Decision:
        """``blocked_since``: questions blocked after this snapshot was made (a user's feedback);
        ``end_user``: whom the answer is for ("" when the request named no one)."""
        standing, scorer, config = self.standing, self.scorer, self.config
        key = question_key(conversation)
        blocked = key in self.blocked or key in blocked_since
        early = policy.before_models(standing, blocked=blocked, varies=self.consistency.varies(key))
        if early is not None:
            return early
        limit = min(max_tokens, config.max_local_tokens)
        proposal = Proposal(
            scorer,
            self.consistency,
            conversation,
            max_tokens=max_tokens,
            retrieval=config.retrieval,
            write=lambda: scorer.write(conversation, limit, time.monotonic() + config.local_budget_s),
            audience=Audience(end_user, config.share_after_users),
        )
        threshold = standing.threshold
        assert threshold is not None  # before_models forwards while none is certified
        for scored in proposal:  # the first servable candidate that passes ends the search
            if scored.servable and scored.candidate.p_good >= threshold:
                break
        attempt = proposal.attempt()
        if _passes(proposal.withheld, threshold) and not _passes(attempt.candidates, threshold):
            return Decision(Route.FORWARD, Reason.NOT_SHARED, attempt)  # only another end user's answer would do
        if proposal.hopeless and not attempt.candidates:
            return Decision(Route.FORWARD, Reason.ROUTER_FORWARD, attempt)
        if proposal.timed_out:
            return Decision(Route.FORWARD, Reason.LOCAL_TIMEOUT, attempt)
        return policy.choose(attempt, standing, draw)


def _passes(candidates: Sequence[Candidate], threshold: float) -> bool:
    return any(c.p_good >= threshold for c in candidates)
