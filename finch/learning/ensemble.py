"""The ensemble: router, generator and validator, the judge, and the policy that joins them.

Two sides, two threads:

* ``decide`` runs on the request path. It reads a *serving snapshot*: frozen copies of the three
  modules that the trainer republishes after it learns. It never takes a lock the trainer holds, so
  a slow training step never delays a request.
* ``learn_from_claude``, ``learn_from_local_attempt`` and ``count_served`` run on the trainer thread
  only. They make a local attempt, judge it against Claude's answer, update the three models, and
  feed every scored answer to the certifier (``finch.policy.bound``), whose certified threshold on
  the stacker's P(good) (``finch.learning.stacker``) is the operating point.
"""

from __future__ import annotations

import copy
import functools
import json
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
from finch.learning.consistency import Consistency
from finch.learning.judge import Judge, normalise
from finch.learning.memory import N_FEATURES, N_ROUTER_FEATURES, Memory, Neighbourhood, question_text
from finch.learning.stacker import Stacker, stack_inputs
from finch.models import checkpoint
from finch.models.encoder import encoder_config
from finch.models.generator import generator_config
from finch.models.learners import Router, Validator, Writer, load_learner
from finch.models.online import pad_batch
from finch.models.tokenizer import FinchTokenizer, atomic_write_text, load_or_build
from finch.policy.bound import Certifier, audit_interval
from finch.policy.risk import clopper_pearson
from finch.policy.schedule import Schedule
from finch.vocabulary import Reason, Route

log = logging.getLogger(__name__)

_RECENT_AUDITS = 100  # audits the conservative phase's tripwire (over_bound) answers to
_GUARD_MIN_AUDITS = 20  # fewer say too little to stop local answers on
# Forwards whose withheld local answer is judged against Claude's: the audits.
AUDITED_REASONS = (Reason.SAMPLED, Reason.OVER_BOUND)
# Below this the router's query is hopeless and the local attempt is not even made.
_ROUTER_FLOOR = 0.5


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
class Decision:
    route: Route
    reason: str  # a Reason
    answer: str | None = None  # the local answer (served, or kept for the audit of a sampled forward)
    p_router: float | None = None
    p_validator: float | None = None
    p_good: float | None = None  # the stacker's score: what the operating point is compared with
    audit_chance: float = 1.0  # for a would-be-local answer: how likely it was to be audited


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


class _Serving:
    """Frozen inference copies of the three modules."""

    def __init__(self, router: Router, validator: Validator, writer: Writer) -> None:
        self.router = _frozen(router.module)
        self.router_prior = router.prior_logit()
        self.validator = _frozen(validator.module)
        self.generator = _frozen(writer.module)


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    clone = copy.deepcopy(module)
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


class Ensemble:
    def __init__(self, home: Path, config: LearningConfig, seed_texts: Iterable[str] = ()) -> None:
        self.home = home
        self.config = config
        self.models_dir = home / "models"
        self.tokenizer: FinchTokenizer = load_or_build(home / "tokenizer.json", seed_texts)
        self.judge = Judge(config.judge_threshold)
        self.memory = Memory(config.judge_threshold)
        if (self.models_dir / "memory.safetensors").exists():
            self.memory.load(self.models_dir / "memory.safetensors")
        self.router: Router = self._load_or_new("router")  # type: ignore[assignment]
        self.validator: Validator = self._load_or_new("validator")  # type: ignore[assignment]
        self.writer: Writer = self._load_or_new("generator")  # type: ignore[assignment]
        state = self._read_state()
        self.learned: int = state.get("learned", 0)
        self.blocked: set[str] = set(state.get("blocked", []))  # questions a user marked bad
        # Every scored answer's evidence, since the first: the bound holds for as long as finch runs.
        self.certifier = Certifier.from_state(state.get("certifier"), config.max_bad_local)
        self.stacker = Stacker.from_state(state.get("stacker"))
        # The operating point: the certified threshold on P(good), None while none is.
        self.threshold: float | None = self._operating_point()
        self.audits = state.get("audits", {"good": 0, "bad": 0})
        self.recent_audits: deque[bool] = deque(state.get("recent_audits", []), maxlen=_RECENT_AUDITS)
        # Audits since the last checkpoint: the audited quality of the models trained since then.
        self.period_audits = state.get("period_audits", {"good": 0, "bad": 0})
        self.rollbacks: int = state.get("rollbacks", 0)
        self.judge.framing.known = frozenset(state.get("framing", []))
        self.consistency = Consistency.from_state(_read_json(self.models_dir / "consistency.json"))
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self._serving = _Serving(self.router, self.validator, self.writer)
        # People ask the same things again: a repeated question skips its embedding on the request path.
        self._question_vec = functools.lru_cache(maxsize=4096)(lambda text: self.judge.embed([text])[0])

    # -- request path ----------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        return self.config.schedule.phase(self.learned)

    def decide(self, conversation: Conversation, max_tokens: int) -> Decision:
        phase = self.phase
        if phase == "cold_start":
            return Decision(Route.FORWARD, Reason.COLD_START)
        key = _key(conversation)
        if key in self.blocked:
            return Decision(Route.FORWARD, Reason.FEEDBACK_FORWARD)
        if self.consistency.varies(key):
            return Decision(Route.FORWARD, Reason.ANSWERS_VARY)  # Claude's own answers to it differ
        threshold = self.threshold  # read once: the trainer may certify another while this runs
        if threshold is None:
            return Decision(Route.FORWARD, Reason.UNCERTIFIED)  # nothing is served before its bound is shown
        repeated = self.consistency.answer(key)
        if repeated is not None:  # Claude gave this answer to this question, consistently
            decision = Decision(Route.FORWARD, Reason.LOCAL_TOO_LONG, repeated, p_good=1.0)
            fits = len(self.tokenizer.encode(repeated)) <= max_tokens
            return self._sample(decision, Reason.REPEAT) if fits else decision
        serving = self._serving  # one snapshot for the whole decision
        tok = self.tokenizer
        hood = self.memory.around(self._question_vec(question_text(conversation)))
        p_router = self._route(serving, conversation, hood)
        if p_router < _ROUTER_FLOOR:
            return Decision(Route.FORWARD, Reason.ROUTER_FORWARD, p_router=p_router)

        prompt = tok.render(conversation, self.writer.config.max_len - 1)
        deadline = time.monotonic() + self.config.local_budget_s
        ids: list[int] = []
        limit = min(max_tokens, self.config.max_local_tokens)
        for token in serving.generator.generate(prompt, limit, tok.eos_id):
            ids.append(token)
            if time.monotonic() > deadline:
                return Decision(Route.FORWARD, Reason.LOCAL_TIMEOUT, p_router=p_router)
        # A generation cut short is no candidate; recall from memory may still offer one.
        written = tok.decode(ids) if len(ids) < limit else ""
        written_vec = self.judge.embed_answers([written])[0]
        candidates = self._candidates(hood, written, written_vec)
        if not candidates:
            return Decision(Route.FORWARD, Reason.LOCAL_TOO_LONG, p_router=p_router)
        scores, evidence = self._score(serving.validator, conversation, hood, candidates)
        best = max(range(len(candidates)), key=scores.__getitem__)
        answer, p_validator = candidates[best][0], scores[best]
        p_good = self.stacker.p_good(stack_inputs(p_router, p_validator, evidence[best]))
        decision = Decision(Route.FORWARD, Reason.VALIDATOR_REJECT, answer, p_router, p_validator, p_good)
        if p_good < threshold or len(tok.encode(answer)) > max_tokens:
            return decision
        return self._sample(decision, Reason.LOCAL)

    def _sample(self, decision: Decision, served_reason: str) -> Decision:
        """A would-be-local answer: served, or forwarded to audit it (strategic sampling)."""
        if self.phase == "conservative" and self.over_bound():
            decision.reason = Reason.OVER_BOUND  # audited at every ask until the models do better
            return decision
        decision.audit_chance = self.config.schedule.sample_rate(self.learned)
        with self._rng_lock:
            sampled = self._rng.random() < decision.audit_chance
        decision.route, decision.reason = (Route.FORWARD, Reason.SAMPLED) if sampled else (Route.LOCAL, served_reason)
        return decision

    def over_bound(self) -> bool:
        """Is the recent audits' bad share above the bound?

        A tripwire for the conservative phase, while the models change fastest: the audits'
        estimate is taken at its word, and more than the bound's share bad among the last hundred
        stops local answers until they clear. It can only forward more, so it never weakens the
        certified bound."""
        n = len(self.recent_audits)
        return n >= _GUARD_MIN_AUDITS and self.recent_audits.count(False) > self.config.max_bad_local * n

    def _candidates(
        self, hood: Neighbourhood | None, written: str, written_vec: torch.Tensor
    ) -> list[tuple[str, torch.Tensor]]:
        """The generator's answer and the answer recalled from similar past questions, when they differ.

        A written answer that says what one of Claude's stored answers says is replaced by that
        answer: the same meaning in Claude's own words, so a small generator's slips (a repeated or
        dropped phrase, which the embedding barely notices) never reach a user."""
        candidates = []
        if not self.config.retrieval:
            return [(written, written_vec)] if written.strip() else []
        if written.strip():
            candidates.append(self.memory.same_answer(written_vec) or (written, written_vec))
        recalled = self.memory.recall(hood)
        if recalled is not None and all(float(recalled[1] @ vec) < self.memory.agree_cos for _, vec in candidates):
            candidates.append(recalled)
        return candidates

    def _route(self, serving: _Serving, conversation: Conversation, hood: Neighbourhood | None) -> float:
        ids = self.tokenizer.render(conversation, self.router.config.max_len, cue_answer=False)
        features = None
        if self.router.config.n_features:
            features = torch.tensor([self.memory.question_features(hood)])
        with torch.no_grad():
            logits, _ = serving.router(torch.tensor([ids]), features=features)
        return float(torch.sigmoid(logits + serving.router_prior)[0])

    def _score(
        self,
        validator: torch.nn.Module,
        conversation: Conversation,
        hood: Neighbourhood | None,
        candidates: list[tuple[str, torch.Tensor]],
    ) -> tuple[list[float], list[list[float]]]:
        """Each candidate's validator score, and the memory's evidence for it."""
        tok, max_len = self.tokenizer, self.validator.config.max_len
        pairs = [tok.render_pair(conversation, text, max_len) for text, _ in candidates]
        evidence = [self.memory.features(hood, vec) for _, vec in candidates]
        device = next(validator.parameters()).device
        with torch.no_grad():
            logits, _ = validator(pad_batch(pairs, tok.pad_id, device), features=torch.tensor(evidence).to(device))
        return torch.sigmoid(logits).tolist(), evidence

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
        written = self.writer.answer(conversation, self.config.max_local_tokens)
        question_vec, (written_vec, teacher_vec) = self.judge.embed_with_answers(
            question_text(conversation), [written, teacher_answer]
        )
        # Score every candidate as the request path would have, from earlier examples only.
        hood = self.memory.around(question_vec)
        candidates = self._candidates(hood, written, written_vec) or [(written, written_vec)]
        evidence = [self.memory.features(hood, vec) for _, vec in candidates]
        scores = self.validator.p_good([(conversation, text) for text, _ in candidates], evidence)
        verdicts = [self.judge.agrees_embedded(text, teacher_answer, vec, teacher_vec) for text, vec in candidates]
        best = max(range(len(candidates)), key=scores.__getitem__)
        good, divergence = verdicts[best]
        p_validator = scores[best]
        router_features = self.memory.question_features(hood)
        p_router = self.router.p_local([conversation], [router_features])[0]
        stacked = stack_inputs(p_router, p_validator, evidence[best])
        p_good = self.stacker.p_good(stacked) if p_router >= _ROUTER_FLOOR else 0.0
        audit_good = None
        if audit is not None and audit.answer is not None and audit.p_good is not None:
            audit_good, _ = self.judge.agrees(audit.answer, teacher_answer)
            self.audits["good" if audit_good else "bad"] += 1
            self.period_audits["good" if audit_good else "bad"] += 1
            self.recent_audits.append(audit_good)
            # What finch was about to serve, at the score it was served at.
            self.certifier.observe(audit.p_good, not audit_good, audit.audit_chance)
        elif repeated is not None:
            self.certifier.observe(1.0, not repeat_agrees)  # the repeat finch would have served, judged
        else:
            # Prequential: the score of the best candidate from earlier examples only, then its verdict.
            self.certifier.observe(p_good, not good)
        self.stacker.observe(stacked, good)

        def featurize(other: str) -> list[float]:
            return self.memory.features(hood, self.judge.embed_answers([other])[0])

        losses = {
            "generator": self.writer.learn(conversation, teacher_answer),
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
        self.threshold = self._operating_point()
        if audit_good is False:
            self.roll_back_if_worse()
        return Judged(good, divergence, p_router, p_validator, losses, audit_good, p_good, candidates[best][0])

    def roll_back_if_worse(self, min_audits: int = 20) -> bool:
        """Since the last checkpoint, have the audits shown the models serving bad answers beyond the
        bound (the exact 95% lower bound of their bad rate above ``max_bad_local``)? Then go back to
        the checkpoint before it: the models were measurably better then."""
        bad, n = self.period_audits["bad"], self.period_audits["good"] + self.period_audits["bad"]
        if n < min_audits or clopper_pearson(bad, n)[0] <= self.config.max_bad_local:
            return False
        restored = {kind: _previous_checkpoint(self.models_dir / kind) for kind in ("router", "validator", "generator")}
        if any(path is None for path in restored.values()):
            return False
        for learner in (self.router, self.validator, self.writer):
            found = restored[learner.kind]
            assert found is not None
            checkpoint.restore(checkpoint.Checkpoint(found, checkpoint.verify(found)), learner)
            for newer in sorted(found.parent.glob("ckpt-*")):
                if newer.name > found.name:  # the audited-bad ones must never be loaded again
                    checkpoint.discard(newer)
        log.warning(
            "audits found %d bad of %d since the last checkpoint: rolled back to %s", bad, n, restored["generator"]
        )
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
            losses["generator"] = self.writer.learn(conversation, teacher_answer)
        return Judged(good, divergence, None, None, losses, attempt=local_answer)

    def count_served(self, served: Decision) -> None:
        """A local answer went out unaudited: it counts, unjudged, toward the bound of its region.
        (With sampling off no served answer could have been judged, so none can count.)"""
        if served.p_good is not None and served.audit_chance > 0:
            self.certifier.observe(served.p_good, None, served.audit_chance)
            self.threshold = self._operating_point()

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
        self._serving = _Serving(self.router, self.validator, self.writer)

    def save(self) -> None:
        for learner in (self.router, self.validator, self.writer):
            checkpoint.save(self.models_dir / learner.kind, learner, self.tokenizer.hash)
        self.memory.save(self.models_dir / "memory.safetensors")
        atomic_write_text(self.models_dir / "consistency.json", json.dumps(self.consistency.to_state()))
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
        atomic_write_text(self.models_dir / "state.json", json.dumps(state))
        self.period_audits = {"good": 0, "bad": 0}

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
                "answers": None if region is None else region.seen,
            },
            "audits": n,
            "bad_local_estimate": self.audits["bad"] / n if n else None,
            "bad_local_interval": [low, high],
            "rollbacks": self.rollbacks,
        }

    # -- helpers ---------------------------------------------------------------------------------

    def _load_or_new(self, kind: str) -> Router | Validator | Writer:
        loaded = load_learner(self.models_dir / kind, kind, self.tokenizer)
        if loaded is not None:
            return loaded  # type: ignore[return-value]
        vocab = self.tokenizer.vocab_size
        preset, seed = self.config.preset, self.config.seed
        if kind == "generator":
            return Writer(generator_config(preset, vocab), self.tokenizer, seed=seed)
        features = N_FEATURES if kind == "validator" else N_ROUTER_FEATURES
        config = encoder_config(
            preset, vocab, pad_id=self.tokenizer.pad_id, sep_id=self.tokenizer.sep_id, n_features=features
        )
        return (Router if kind == "router" else Validator)(config, self.tokenizer, seed=seed)

    def _read_state(self) -> dict[str, Any]:
        return _read_json(self.models_dir / "state.json") or {}


def _read_json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        log.warning("ignoring unreadable %s", path)
        return None


def _previous_checkpoint(root: Path) -> Path | None:
    """The second newest good checkpoint: the one before the models now being audited."""
    good = checkpoint.verified(root)
    return good[1].path if len(good) > 1 else None


def _key(conversation: Conversation) -> str:
    return normalise(conversation.to_json())
