"""The ensemble: router, generator and validator, the judge, and the learning that joins them.

Two sides, two threads:

* ``decide`` runs on the request path. It reads two published snapshots: a ``Scorer`` (frozen copies
  of the three modules, ``finch.learning.scorer``) and the policy's ``Standing`` (operating point,
  phase, sampling rate, tripwire), and lets the pure policy (``finch.policy.decide``) route. It
  never takes a lock the trainer holds, so a slow training step never delays a request.
* ``learn_from_claude``, ``learn_from_local_attempt`` and ``count_served`` run on the trainer thread
  only. They make a local attempt, judge it against Claude's answer, update the three models, and
  feed every scored answer to the certifier (``finch.policy.bound``), whose certified threshold on
  the stacker's P(good) (``finch.learning.stacker``) is the operating point.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from finch.config import Settings
from finch.conversation import Conversation
from finch.learning.home import ModelHome
from finch.learning.judge import Judge, normalise
from finch.learning.memory import Memory, Neighbourhood, question_text
from finch.learning.scorer import Candidate, Scorer
from finch.learning.stacker import Stacker, stack_inputs
from finch.models.learners import Generator, Router, Validator
from finch.models.tokenizer import FinchTokenizer, load_or_build
from finch.policy import decide as policy
from finch.policy.bound import Certifier, audit_interval
from finch.policy.decide import Decision, Standing
from finch.policy.risk import clopper_pearson
from finch.policy.schedule import Schedule
from finch.vocabulary import Reason, Route

log = logging.getLogger(__name__)

_RECENT_AUDITS = 100  # audits the conservative phase's tripwire (over_bound) answers to
_GUARD_MIN_AUDITS = 20  # fewer say too little to stop local answers on


@dataclass(frozen=True)
class LearningConfig:
    """The settings the models and the policy read; every default is the one declared in Settings."""

    preset: str = Settings.preset
    max_bad_local: float = Settings.max_bad_local
    judge_threshold: float = Settings.judge_threshold
    schedule: Schedule = field(default_factory=Schedule)
    max_local_tokens: int = Settings.max_local_tokens
    local_budget_s: float = Settings.local_budget_s  # past this, the attempt is abandoned (forwarded)
    retrieval: bool = Settings.retrieval  # recalled candidate and Claude's words for matching written answers
    seed: int = Settings.seed


@dataclass
class Judged:
    """What the trainer learned from one event; the trainer logs it."""

    good: bool | None
    divergence: float | None
    p_router: float | None
    p_validator: float | None
    losses: dict[str, float]
    audit_good: bool | None = None  # for a sampled forward: was the withheld local answer good?
    p_good: float | None = None  # the stacker's score for the attempt, before this verdict
    attempt: str | None = None  # the local answer judged


class Ensemble:
    def __init__(self, home: Path, config: LearningConfig, seed_texts: Iterable[str] = ()) -> None:
        self.home = home
        self.config = config
        self.files = ModelHome(home / "models")
        self.tokenizer: FinchTokenizer = load_or_build(home / "tokenizer.json", seed_texts)
        self.judge = Judge(config.judge_threshold)
        self.memory = Memory(config.judge_threshold)
        self.files.load_memory(self.memory)
        preset, seed = config.preset, config.seed
        self.router: Router = self.files.learner("router", self.tokenizer, preset, seed)  # type: ignore[assignment]
        self.validator: Validator = self.files.learner("validator", self.tokenizer, preset, seed)  # type: ignore[assignment]
        self.generator: Generator = self.files.learner("generator", self.tokenizer, preset, seed)  # type: ignore[assignment]
        state = self.files.state()
        self.learned: int = state.get("learned", 0)
        self.blocked: set[str] = set(state.get("blocked", []))  # questions a user marked bad
        # Every scored answer's evidence, since the first: the bound holds for as long as finch runs.
        self.certifier = Certifier.from_state(state.get("certifier"), config.max_bad_local)
        self.stacker = Stacker.from_state(state.get("stacker"))
        # The operating point: the certified threshold on P(good), None while none is.
        self.threshold: float | None = None  # the operating point; _republish sets it
        self.audits = state.get("audits", {"good": 0, "bad": 0})
        self.recent_audits: deque[bool] = deque(state.get("recent_audits", []), maxlen=_RECENT_AUDITS)
        # Audits since the last checkpoint: the audited quality of the models trained since then.
        self.period_audits = state.get("period_audits", {"good": 0, "bad": 0})
        self.rollbacks: int = state.get("rollbacks", 0)
        self.judge.framing.known = frozenset(state.get("framing", []))
        self.consistency = self.files.consistency()
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        # People ask the same things again: a repeated question skips its embedding on the request path.
        self._question_vec = functools.lru_cache(maxsize=4096)(lambda text: self.judge.embed([text])[0])
        self._scorer = self._new_scorer()
        self._republish()

    # -- request path ----------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        return self.config.schedule.phase(self.learned)

    def decide(self, conversation: Conversation, max_tokens: int) -> Decision:
        standing, scorer = self.standing, self._scorer  # one published snapshot each, for the whole decision
        key = _key(conversation)
        early = policy.before_models(standing, blocked=key in self.blocked, varies=self.consistency.varies(key))
        if early is not None:
            return early

        def fits(answer: str) -> bool:
            return len(self.tokenizer.encode(answer)) <= max_tokens

        repeated = self.consistency.answer(key)
        if repeated is not None:  # Claude gave this answer to this question, consistently
            return policy.choose([(repeated, 1.0)], standing, fits, self._draw, served_reason=Reason.REPEAT)
        hood = scorer.neighbourhood(conversation)
        p_router = scorer.p_router(conversation, hood)
        if p_router < policy.ROUTER_FLOOR:
            return Decision(Route.FORWARD, Reason.ROUTER_FORWARD, p_router=p_router)
        candidates = self._recalled(hood)
        p_goods, p_validators = scorer.score(conversation, hood, p_router, candidates)
        if policy.first_passing(p_goods, standing.threshold) is None:  # write only when recall is not enough
            limit = min(max_tokens, self.config.max_local_tokens)
            written = scorer.write(conversation, limit, time.monotonic() + self.config.local_budget_s)
            if written is None:
                return Decision(Route.FORWARD, Reason.LOCAL_TIMEOUT, p_router=p_router)
            extra = self._written(written, scorer.embed_answer(written), candidates) if written.strip() else []
            more_goods, more_validators = scorer.score(conversation, hood, p_router, extra)
            candidates, p_goods, p_validators = candidates + extra, p_goods + more_goods, p_validators + more_validators
        tried = [(text, p_good) for (text, _), p_good in zip(candidates, p_goods, strict=True)]
        return policy.choose(tried, standing, fits, self._draw, p_router, p_validators)

    def _draw(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def over_bound(self) -> bool:
        """Is the recent audits' bad share above the bound?

        A tripwire for the conservative phase, while the models change fastest: the audits'
        estimate is taken at its word, and more than the bound's share bad among the last hundred
        stops local answers until they clear. It can only forward more, so it never weakens the
        certified bound."""
        n = len(self.recent_audits)
        return n >= _GUARD_MIN_AUDITS and self.recent_audits.count(False) > self.config.max_bad_local * n

    def _recalled(self, hood: Neighbourhood | None) -> list[Candidate]:
        """The answer the nearest past questions vote for: the first candidate tried."""
        recalled = self.memory.recall(hood) if self.config.retrieval else None
        return [] if recalled is None else [recalled]

    def _written(self, written: str, written_vec: torch.Tensor, before: list[Candidate]) -> list[Candidate]:
        """The generator's answer, as the next candidate when it says something the ones before do not.

        A written answer that says what one of Claude's stored answers says is replaced by that
        answer: the same meaning in Claude's own words, so a small generator's slips (a repeated or
        dropped phrase, which the embedding barely notices) never reach a user."""
        if not written.strip():
            return []
        if self.config.retrieval:
            written, written_vec = self.memory.same_answer(written_vec) or (written, written_vec)
        if any(float(written_vec @ vec) >= self.memory.agree_cos for _, vec in before):
            return []
        return [(written, written_vec)]

    # -- trainer thread --------------------------------------------------------------------------

    def learn_from_claude(
        self,
        conversation: Conversation,
        teacher_answer: str,
        audit: Decision | None = None,
    ) -> Judged:
        """Learn from Claude's answer to a forwarded request.

        ``audit`` is the decision when the request was forwarded only to audit it: its answer is
        what finch would have served (and was, with probability 1 - ``audit.audit_chance``), so
        judging it against Claude's answer is an audit of what finch serves.
        """
        if self.judge.framing.observe(teacher_answer):
            self.memory.reembed(self.judge.embed_answers)  # agreement is measured without framing
        key = _key(conversation)
        repeated = self.consistency.answer(key)  # what finch would have repeated, before this answer
        repeat_agrees = self.consistency.observe(key, teacher_answer, lambda a, b: self.judge.agrees(a, b)[0])
        written = self.generator.answer(conversation, self.config.max_local_tokens)
        question_vec, (written_vec, teacher_vec) = self.judge.embed_with_answers(
            question_text(conversation), [written, teacher_answer]
        )
        # Score every candidate as the request path would have, in its order, from earlier examples only.
        hood = self.memory.around(question_vec)
        candidates = self._recalled(hood)
        candidates += self._written(written, written_vec, candidates)
        candidates = candidates or [(written, written_vec)]
        evidence = [self.memory.features(hood, vec) for _, vec in candidates]
        p_validators = self.validator.p_good([(conversation, text) for text, _ in candidates], evidence)
        verdicts = [self.judge.agrees_embedded(text, teacher_answer, vec, teacher_vec) for text, vec in candidates]
        router_features = self.memory.question_features(hood)
        p_router = self.router.p_local([conversation], [router_features])[0]
        stacked = [stack_inputs(p_router, p, e) for p, e in zip(p_validators, evidence, strict=True)]
        hopeless = p_router < policy.ROUTER_FLOOR
        p_goods = [0.0 if hopeless else self.stacker.p_good(inputs) for inputs in stacked]
        best = max(range(len(candidates)), key=lambda i: (p_goods[i], p_validators[i]))
        good, divergence = verdicts[best]
        audit_good = None
        if audit is not None and audit.answer is not None and audit.p_good is not None:
            audit_good, _ = self.judge.agrees(audit.answer, teacher_answer)
            self.audits["good" if audit_good else "bad"] += 1
            self.period_audits["good" if audit_good else "bad"] += 1
            self.recent_audits.append(audit_good)
            # What finch was about to serve, at the scores it was tried at, each judged.
            tried = audit.tried or ((audit.answer, audit.p_good),)
            options = [
                (p, not (audit_good if text == audit.answer else self.judge.agrees(text, teacher_answer)[0]))
                for text, p in tried
            ]
            self.certifier.observe_first(options, audit.audit_chance)
        elif repeated is not None:
            self.certifier.observe(1.0, not repeat_agrees)  # the repeat finch would have served, judged
        else:
            # Prequential: each candidate's score from earlier examples only, then its verdict.
            self.certifier.observe_first([(p, not ok) for p, (ok, _) in zip(p_goods, verdicts, strict=True)])
        for inputs, (ok, _) in zip(stacked, verdicts, strict=True):
            self.stacker.observe(inputs, ok)

        def featurize(other: str) -> list[float]:
            return self.memory.features(hood, self.judge.embed_answers([other])[0])

        losses = {
            "generator": self.generator.learn(conversation, teacher_answer),
            "router": self.router.learn(conversation, good, router_features),
        }
        validator_losses = [
            self.validator.learn(conversation, text, ok, features, featurize if i == 0 else None)
            for i, ((text, _), (ok, _), features) in enumerate(zip(candidates, verdicts, evidence, strict=True))
        ]
        if not any(ok for ok, _ in verdicts):  # Claude's own answer is a good one: a positive to contrast
            teacher_evidence = self.memory.features(hood, teacher_vec)
            validator_losses.append(self.validator.learn(conversation, teacher_answer, True, teacher_evidence))
        losses["validator"] = sum(validator_losses) / len(validator_losses)
        self.memory.add(question_vec, teacher_vec, teacher_answer)
        self.learned += 1
        if audit_good is False:
            self.roll_back_if_worse()
        self._republish()
        attempt = candidates[best][0]
        return Judged(good, divergence, p_router, p_validators[best], losses, audit_good, p_goods[best], attempt)

    def roll_back_if_worse(self, min_audits: int = 20) -> bool:
        """Since the last checkpoint, have the audits shown the models serving bad answers beyond the
        bound (the exact 95% lower bound of their bad rate above ``max_bad_local``)? Then go back to
        the checkpoint before it: the models were measurably better then."""
        bad, n = self.period_audits["bad"], self.period_audits["good"] + self.period_audits["bad"]
        if n < min_audits or clopper_pearson(bad, n)[0] <= self.config.max_bad_local:
            return False
        restored = self.files.roll_back(self._learners())
        if restored is None:
            return False
        log.warning("audits found %d bad of %d since the last checkpoint: rolled back to %s", bad, n, restored)
        self.period_audits = {"good": 0, "bad": 0}
        self.rollbacks += 1
        self.publish()
        return True

    def learn_from_local_attempt(
        self,
        conversation: Conversation,
        local_answer: str,
        teacher_answer: str | None = None,
        good: bool | None = None,
    ) -> Judged:
        """Learn from a local answer's verdict: the judge's (with a teacher answer) or a user's."""
        divergence = None
        if good is None:
            if teacher_answer is None:
                raise ValueError("need a teacher answer or a verdict")
            good, divergence = self.judge.agrees(local_answer, teacher_answer)
        if not good:
            self.block(conversation)
        question_vec, (answer_vec,) = self.judge.embed_with_answers(question_text(conversation), [local_answer])
        hood = self.memory.around(question_vec)
        losses = {
            "router": self.router.learn(conversation, good, self.memory.question_features(hood)),
            "validator": self.validator.learn(conversation, local_answer, good, self.memory.features(hood, answer_vec)),
        }
        if teacher_answer is not None:
            losses["generator"] = self.generator.learn(conversation, teacher_answer)
        return Judged(good, divergence, None, None, losses, attempt=local_answer)

    def count_served(self, served: Decision) -> None:
        """A local answer went out unaudited: it counts, unjudged, toward the bound of its region.
        (With sampling off no served answer could have been judged, so none can count.)"""
        if served.p_good is not None and served.audit_chance > 0:
            tried = served.tried or ((served.answer or "", served.p_good),)
            self.certifier.observe_first([(p, None) for _, p in tried], served.audit_chance)
            self._republish()

    def block(self, conversation: Conversation) -> None:
        """This question forwards from now on (a user or an audit found its local answer bad)."""
        self.blocked.add(_key(conversation))

    def _operating_point(self) -> float | None:
        """The loosest certified threshold; in the conservative phase, no looser than its rule."""
        if self.phase == "cold_start":
            return None
        conservative = self.phase == "conservative"
        return self.certifier.certified(self.config.schedule.conservative_p if conservative else 0.0)

    def publish(self) -> None:
        """Swap in fresh serving copies (one reference assignment: requests see old or new)."""
        self._scorer = self._new_scorer()

    def _new_scorer(self) -> Scorer:
        judge = self.judge
        return Scorer(
            self.router,
            self.validator,
            self.generator,
            self.tokenizer,
            self.memory,
            self.stacker,
            self._question_vec,
            judge.embed_answers,
        )

    def _republish(self) -> None:
        """The operating point from the evidence as it now stands, and the policy's state with it,
        published whole (one reference assignment: a request sees the old state or the new)."""
        self.threshold = self._operating_point()
        schedule = self.config.schedule
        rate = schedule.sample_rate(self.learned)
        self.standing = Standing(self.phase, self.threshold, rate, self.over_bound(), min(rate, schedule.floor_rate))

    def save(self) -> None:
        state = {
            "learned": self.learned,
            "blocked": sorted(self.blocked),
            "certifier": self.certifier.to_state(),
            "stacker": self.stacker.to_state(),
            "audits": self.audits,
            "recent_audits": list(self.recent_audits),
            "period_audits": {"good": 0, "bad": 0},
            "rollbacks": self.rollbacks,
            "framing": sorted(self.judge.framing.known),
        }
        self.files.save(self._learners(), self.tokenizer, self.memory, self.consistency, state)
        self.period_audits = {"good": 0, "bad": 0}

    def _learners(self) -> tuple[Router, Validator, Generator]:
        return self.router, self.validator, self.generator

    def status(self) -> dict[str, Any]:
        n = self.audits["good"] + self.audits["bad"]
        low, high = audit_interval(self.audits["bad"], n)
        region = self.certifier.region(self.threshold)
        return {
            "learned": self.learned,
            "phase": self.phase,
            "sample_rate": self.config.schedule.sample_rate(self.learned),
            "threshold": self.threshold,
            "max_bad_local": self.config.max_bad_local,
            "certified": self.threshold is not None,
            # What the bound is over, and how sure: served local answers, checked at every answer.
            "bound": {
                "over": "local answers served at the operating point (P(good) >= threshold), audited or not",
                "confidence": 1 - self.certifier.delta,
                "evidence": None if region is None else region.wealth,
                "evidence_needed": None if self.threshold is None else self.certifier.needed(self.threshold),
                "answers": None if region is None else region.seen,
            },
            "audits": n,
            "bad_local_estimate": self.audits["bad"] / n if n else None,
            "bad_local_interval": [low, high],
            "rollbacks": self.rollbacks,
        }


def _key(conversation: Conversation) -> str:
    return normalise(conversation.to_json())
