"""The ensemble: router, generator and validator, the judge, and the learning that joins them.

It lives in the trainer's process (``finch.learning.trainer``) and only learns:
``learn_from_claude``, ``learn_from_local_attempt`` and ``count_served`` make a local attempt, judge
it against Claude's answer, update the three models, and feed every scored answer to the certifier
(``finch.policy.bound``), whose certified threshold on the stacker's P(good)
(``finch.learning.stacker``) is the operating point. What the request path needs of it goes out as a
serving snapshot (``finch.learning.snapshot``); the server decides from that
(``finch.learning.serving``) and never touches the ensemble.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finch.config import Settings
from finch.conversation import Conversation
from finch.learning.consistency import question_key
from finch.learning.home import ModelHome
from finch.learning.judge import Judge
from finch.learning.memory import Memory, question_text
from finch.learning.scorer import recalled, written_candidate
from finch.learning.stacker import Stacker, stack_inputs
from finch.models.learners import Generator, Router, Validator
from finch.models.tokenizer import FinchTokenizer, load_or_build
from finch.policy import decide as policy
from finch.policy.audits import Audits
from finch.policy.bound import Certifier
from finch.policy.decide import Decision, Standing
from finch.policy.schedule import Schedule

log = logging.getLogger(__name__)


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
        lowest = config.schedule.lowest_rate
        self.certifier = Certifier.from_state(state.get("certifier"), config.max_bad_local, floor=lowest)
        self.stacker = Stacker.from_state(state.get("stacker"))
        # The operating point: the certified threshold on P(good), None while none is.
        self.threshold: float | None = None  # the operating point; _republish sets it
        self.audits = Audits(state)
        self.rollbacks: int = state.get("rollbacks", 0)
        self.judge.framing.known = frozenset(state.get("framing", []))
        self.consistency = self.files.consistency()
        # How far through its source (the request log) learning has come, saved with the models.
        self.position: dict[str, int] = state.get("position", {})
        self._attempts: dict[Conversation, str] = {}  # the generator's, written ahead for a batch
        self._republish()

    @property
    def phase(self) -> str:
        return self.config.schedule.phase(self.learned)

    # -- learning --------------------------------------------------------------------------------

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
        key = question_key(conversation)
        repeated = self.consistency.answer(key)  # what finch would have repeated, before this answer
        repeat_agrees = self.consistency.observe(key, teacher_answer, lambda a, b: self.judge.agrees(a, b)[0])
        written = self._attempts.get(conversation)
        if written is None:
            written = self.generator.answer(conversation, self.config.max_local_tokens)
        question_vec, (written_vec, teacher_vec) = self.judge.embed_with_answers(
            question_text(conversation), [written, teacher_answer]
        )
        # Score every candidate as the request path would have, in its order, from earlier examples only.
        hood = self.memory.around(question_vec)
        retrieval = self.config.retrieval
        candidates = recalled(self.memory, hood, retrieval)
        candidates += written_candidate(self.memory, written, written_vec, candidates, retrieval)
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
            self.audits.record(audit_good)
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

    def roll_back_if_worse(self) -> bool:
        """Have the audits since the last checkpoint shown the models serving bad answers beyond the
        bound? Then go back to the checkpoint before it: the models were measurably better then."""
        if not self.audits.period_beyond(self.config.max_bad_local):
            return False
        restored = self.files.roll_back(self._learners())
        if restored is None:
            return False
        log.warning(
            "audits since the last checkpoint went over the bound (%s): rolled back to %s", self.audits.period, restored
        )
        self.audits.new_period()
        self._attempts = {}  # written by the models rolled back
        self.rollbacks += 1
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

    def begin_batch(self, conversations: Sequence[Conversation] = ()) -> None:
        """Learn the next events as one batch (a trainer with a backlog): each is scored, judged and
        counted as it comes, as ever, and the three models take their steps for all of them at
        ``end_batch``. So scores stay prequential, and learning k events costs about one step's
        time instead of k."""
        for learner in self._learners():
            learner.begin_batch()
        # The generator is the same for the whole batch: its attempts at the batch's questions are
        # written together, each what it would have written alone.
        unique = list(dict.fromkeys(conversations))
        self._attempts = dict(zip(unique, self.generator.answers(unique, self.config.max_local_tokens), strict=True))

    def end_batch(self) -> dict[str, float | None]:
        """The batch's steps; each model's loss on it."""
        self._attempts = {}
        return {learner.kind: learner.end_batch() for learner in self._learners()}

    def count_served(self, served: Decision) -> None:
        """A local answer went out unaudited: it counts, unjudged, toward the bound of its region.
        (With sampling off no served answer could have been judged, so none can count.)"""
        if served.p_good is not None and served.audit_chance > 0:
            tried = served.tried or ((served.answer or "", served.p_good),)
            self.certifier.observe_first([(p, None) for _, p in tried], served.audit_chance)
            self._republish()

    def block(self, conversation: Conversation) -> None:
        """This question forwards from now on (a user or an audit found its local answer bad)."""
        self.blocked.add(question_key(conversation))

    def _operating_point(self) -> float | None:
        """The loosest certified threshold; in the conservative phase, no looser than its rule."""
        if self.phase == "cold_start":
            return None
        conservative = self.phase == "conservative"
        return self.certifier.certified(self.config.schedule.conservative_p if conservative else 0.0)

    def _republish(self) -> None:
        """The operating point from the evidence as it now stands, and the policy's state with it,
        published whole (one reference assignment: a request sees the old state or the new)."""
        self.threshold = self._operating_point()
        schedule = self.config.schedule
        rate = schedule.sample_rate(self.learned)
        tripped = self.audits.over_bound(self.config.max_bad_local)
        self.standing = Standing(self.phase, self.threshold, rate, tripped, min(rate, schedule.floor_rate))

    def save(self) -> None:
        state = {
            "learned": self.learned,
            "blocked": sorted(self.blocked),
            "certifier": self.certifier.to_state(),
            "stacker": self.stacker.to_state(),
            **self.audits.to_state(),
            "rollbacks": self.rollbacks,
            "framing": sorted(self.judge.framing.known),
            "position": self.position,
        }
        self.files.save(self._learners(), self.tokenizer, self.memory, self.consistency, state)
        self.audits.new_period()

    def _learners(self) -> tuple[Router, Validator, Generator]:
        return self.router, self.validator, self.generator

    def status(self) -> dict[str, Any]:
        return {
            "learned": self.learned,
            "phase": self.phase,
            "sample_rate": self.config.schedule.sample_rate(self.learned),
            "threshold": self.threshold,
            "max_bad_local": self.config.max_bad_local,
            "certified": self.threshold is not None,
            "bound": self.certifier.describe(self.threshold),  # over served local answers, at every answer
            **self.audits.summary(),
            "rollbacks": self.rollbacks,
        }
