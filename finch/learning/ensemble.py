"""The ensemble: router, generator and validator, the judge, and the learning that joins them.

It lives in the trainer's process (``finch.learning.trainer``) and only learns: ``learn_from_claude``,
``learn_from_verdict`` and ``count_served`` make a local attempt, judge it against Claude's answer,
update the three models, and feed every scored answer to the certifier (``finch.policy.bound``),
whose certified threshold on the stacker's P(good) is the operating point. What the request path
needs goes out as a serving snapshot (``finch.learning.snapshot``); the server decides from that
(``finch.learning.serving``) and never touches the ensemble.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from finch.config import Settings
from finch.conversation import Conversation, question_key
from finch.learning.events import Judged
from finch.learning.home import ModelHome
from finch.learning.judge import Judge
from finch.learning.learners import Learners
from finch.learning.memory import Memory, question_text
from finch.learning.pipeline import Audience, Proposal
from finch.learning.scorer import Scorer
from finch.learning.stacker import Stacker
from finch.models.tokenizer import FinchTokenizer, load_or_build
from finch.policy.audits import Audits
from finch.policy.bound import Certifier
from finch.policy.decide import Decision, Source, Standing
from finch.policy.schedule import Schedule
from finch.policy.watch import Watch

log = logging.getLogger(__name__)


class Ensemble:
    def __init__(self, settings: Settings, seed_texts: Iterable[str] = ()) -> None:
        """``settings``: finch's, whole (the trainer's are the server's); its home holds the models."""
        config = self.config = settings
        home = self.home = settings.home
        self.schedule = Schedule.of(settings)
        self.files = ModelHome(home / "models")
        self.tokenizer: FinchTokenizer = load_or_build(home / "tokenizer.json", seed_texts)
        self.judge = Judge(config.judge_threshold)
        self.memory = Memory(config.judge_threshold)
        self.files.load_memory(self.memory)
        models = (config.preset, config.seed, config.max_local_tokens, config.retrieval)
        self.models = Learners(self.files, self.tokenizer, *models)
        state = self.files.state()
        self.learned: int = state.get("learned", 0)
        self.blocked: set[str] = set(state.get("blocked", []))  # questions a user marked bad
        # Every scored answer's evidence, since the first: the bound holds for as long as finch runs.
        lowest, bound = self.schedule.lowest_rate, config.max_bad_local
        self.certifier = Certifier.from_state(state.get("certifier"), bound, floor=lowest)
        self.stacker = Stacker.from_state(state.get("stacker"))
        self.threshold: float | None = None  # the operating point (certified, on P(good)): _republish sets it
        self.audits = Audits(state)
        # With sampling off nothing is audited, so nothing is at stake either.
        stake = config.audit_stake if any(rate > 0 for _, rate in self.schedule.sampling) else 0.0
        self.watch = Watch.from_state(state.get("watch"), stake)
        self.rollbacks: int = state.get("rollbacks", 0)
        self.judge.framing.known = frozenset(state.get("framing", []))
        self.consistency = self.files.consistency(config.share_after_users)
        # How far through its source (the request log) learning has come, saved with the models.
        self.position: dict[str, int] = state.get("position", {})
        self._republish()

    @property
    def phase(self) -> str:
        return self.schedule.phase(self.learned)

    # -- learning --------------------------------------------------------------------------------

    def learn_from_claude(
        self,
        conversation: Conversation,
        teacher_answer: str,
        audit: Decision | None = None,
        max_tokens: int | None = None,
        end_user: str = "",
    ) -> Judged:
        """Learn from Claude's answer to a forwarded request.

        The question's candidates are first scored as the request path scores them (the decision
        pipeline, ``finch.learning.pipeline``), from earlier examples only, and each is judged
        against Claude's answer. ``audit`` is the decision when the request was forwarded only to
        audit it: its attempt is what finch would have served (and did, with probability
        1 - its audit chance), so the bound counts that record, at the scores it was served at.
        Otherwise the bound counts this attempt, as the request path would have made it now.
        ``max_tokens``: the request's (unknown for rows logged before it was recorded).
        ``end_user``: whom Claude gave the answer to ("" when the request named no one).
        """
        key = question_key(conversation)
        never = key in self.blocked or self.consistency.varies(key)  # forwarded before any model: not counted
        proposal = self.propose(conversation, max_tokens or self.config.max_local_tokens, end_user)
        scored = list(proposal)  # every candidate, before anything below learns from this answer
        model = [s for s in scored if s.candidate.source != Source.REPEAT]  # what the models learn from
        vecs = [s.vec for s in model]
        if self.judge.framing.observe(teacher_answer):  # agreement is measured without framing
            self.memory.reembed(self.judge.embed_answers)
            vecs = list(self.judge.embed_answers([s.candidate.text for s in model])) if model else []
        repeat_agrees = self.consistency.observe(key, teacher_answer, lambda a, b: self.judge.agrees(a, b)[0], end_user)
        teacher_vec = self.judge.embed_answers([teacher_answer])[0]
        judged = [
            (s, *self.judge.agrees_embedded(s.candidate.text, teacher_answer, vec, teacher_vec))
            for s, vec in zip(model, vecs, strict=True)
        ]
        best = max(judged, key=lambda j: (j[0].candidate.p_good, j[0].candidate.p_validator or 0.0), default=None)
        good, divergence = (best[1], best[2]) if best is not None else (False, None)
        verdicts = {id(s): verdict for s, verdict, _ in judged}  # Scored holds lists: keyed by identity
        audit_good = self._count(proposal, verdicts, repeat_agrees, teacher_answer, audit, never)
        for s, verdict, _ in judged:
            self.stacker.observe(s.stacked, verdict)
        hood = proposal.hood
        losses = self.models.learn_from_claude(
            conversation,
            teacher_answer,
            [(s, verdict) for s, verdict, _ in judged],
            good,
            self.memory.question_features(hood),
            lambda other: self.memory.features(hood, self.judge.embed_answers([other])[0]),
            self.memory.features(hood, teacher_vec),  # Claude's answer, embedded once above
        )
        assert proposal.question_vec is not None
        self.memory.add(proposal.question_vec, teacher_vec, teacher_answer, end_user)
        self.learned += 1
        if audit_good is False:
            self.roll_back_if_worse()
        self._republish()
        if best is None:
            return Judged(good, divergence, proposal.p_router, None, losses, audit_good)
        chosen = best[0].candidate
        p_good = chosen.p_good if best[0].servable else 0.0  # 0: served at no threshold
        return Judged(good, divergence, proposal.p_router, chosen.p_validator, losses, audit_good, p_good, chosen.text)

    def _count(
        self,
        proposal: Proposal,
        verdicts: dict[int, bool],
        repeat_agrees: bool | None,
        teacher_answer: str,
        audit: Decision | None,
        never: bool = False,
    ) -> bool | None:
        """Count one request in the bound: at every threshold, the answer that would be served there,
        judged. An audit counts the attempt the request path logged, at the scores it was served at,
        with its audit chance; any other forward counts this proposal (prequential: each candidate
        scored from earlier examples only), unless the request path ``never`` tries one for it.
        Returns an audit's verdict on the withheld answer."""
        if audit is None or audit.attempt is None or audit.answer is None:
            if never:
                return None
            bad = [
                not (repeat_agrees if s.candidate.source == Source.REPEAT else verdicts[id(s)])
                for s in proposal.servable()
            ]
            self.certifier.observe_first(proposal.attempt().options(bad))
            return None
        audit_good, _ = self.judge.agrees(audit.answer, teacher_answer)
        self.audits.record(audit_good)
        attempt = audit.attempt
        bad = [
            not (audit_good if c.text == audit.answer else self.judge.agrees(c.text, teacher_answer)[0])
            for c in attempt.candidates
        ]
        self.certifier.observe_first(attempt.options(bad), attempt.audit_chance)
        self.watch.observe(not audit_good)  # a bad audit: the served answers are watched closely again
        return audit_good

    def propose(self, conversation: Conversation, max_tokens: int, end_user: str = "") -> Proposal:
        """The decision pipeline on the models as they stand (``Learners.propose``), for ``end_user``."""
        audience = Audience(end_user, self.config.share_after_users)
        return self.models.propose(self.scorer(), self.consistency, conversation, max_tokens, audience)

    def scorer(self) -> Scorer:
        """Inference on the learners' own modules, as the request path scores on a snapshot of them."""
        return self.models.scorer(self.memory, self.stacker, self.question_vec, self.judge.embed_answers)

    def question_vec(self, text: str) -> torch.Tensor:
        return self.judge.embed([text])[0]

    def roll_back_if_worse(self) -> bool:
        """Have the audits since the last checkpoint shown the models serving bad answers beyond the
        bound? Then go back to the checkpoint before it: the models were measurably better then.

        Against an update that makes the models worse; it never acted on any stream measured
        (``benchmarks/guards.py``: it needs 20 audits within one checkpoint period)."""
        if not self.audits.period_beyond(self.config.max_bad_local):
            return False
        restored = self.files.roll_back(self.models.all())
        if restored is None:
            return False
        log.warning(
            "audits since the last checkpoint went over the bound (%s): rolled back to %s", self.audits.period, restored
        )
        self.audits.new_period()
        self.models.forget_written()
        self.rollbacks += 1
        return True

    def learn_from_verdict(self, conversation: Conversation, local_answer: str, good: bool) -> Judged:
        """Learn from a user's verdict on a local answer; a bad one blocks its question."""
        if not good:
            self.block(conversation)
        question_vec, (answer_vec,) = self.judge.embed_with_answers(question_text(conversation), [local_answer])
        hood = self.memory.around(question_vec)
        evidence = self.memory.features(hood, answer_vec)
        losses = self.models.learn_verdict(
            conversation, local_answer, good, self.memory.question_features(hood), evidence
        )
        return Judged(good, None, None, None, losses, attempt=local_answer)

    def begin_batch(self, conversations: Sequence[Conversation] = ()) -> None:
        """Learn the next events as one batch (a trainer with a backlog): each is scored, judged and
        counted as it comes, and the models step for all of them at ``end_batch`` (prequential
        scores; k events cost about one step)."""
        self.models.begin_batch(self.scorer(), conversations)

    def end_batch(self) -> dict[str, float | None]:
        return self.models.end_batch()  # the batch's steps; each model's loss on it

    def count_unlearned(self, audit: Decision) -> None:
        """An audit that could not be learned still counts, as bad: a lost verdict never leans the
        bound toward certifying."""
        self._count_logged(audit, True)

    def count_served(self, served: Decision) -> None:
        """A local answer went out unaudited: it counts, unjudged, toward the bound of its region.
        (With sampling off no served answer could have been judged, so none can count.)"""
        if self._count_logged(served, None):
            self.watch.observe(None)
            self._republish()

    def _count_logged(self, decision: Decision, bad: bool | None) -> bool:
        """Count a logged attempt, every candidate with the verdict ``bad``, at its audit chance."""
        attempt = decision.attempt
        if attempt is None or not attempt.candidates or attempt.audit_chance <= 0:
            return False
        self.certifier.observe_first(attempt.options([bad] * len(attempt.candidates)), attempt.audit_chance)
        return True

    def block(self, conversation: Conversation, forget: bool = False) -> int:
        """This question forwards from now on: a user or an audit found its local answer bad, or its
        namespace asked to ``forget`` it: then its memory rows and Claude's repeated answer go too (the
        block stays, as the weights may still hold its words). Returns the memory rows removed."""
        key = question_key(conversation)
        self.blocked.add(key)
        if not forget:
            return 0
        self.consistency.forget(key)
        return self.memory.forget(self.question_vec(question_text(conversation)))

    def _operating_point(self) -> float | None:
        """The loosest certified threshold; in the conservative phase, no looser than its rule."""
        if self.phase == "cold_start":
            return None
        conservative = self.phase == "conservative"
        return self.certifier.certified(self.schedule.conservative_p if conservative else 0.0)

    def _republish(self) -> None:
        """The operating point from the evidence as it now stands, and the policy's state with it,
        published whole (one reference assignment: a request sees the old state or the new)."""
        self.threshold = self._operating_point()
        schedule = self.schedule
        rate = schedule.sample_rate(self.learned)
        tripped = self.audits.over_bound(self.config.max_bad_local)
        repeat_rate = min(rate, schedule.floor_rate)
        chance = self.watch.audit_chance  # a new certificate's answers are audited more (finch.policy.watch)
        self.standing = Standing(self.phase, self.threshold, chance(rate), tripped, chance(repeat_rate))

    def save(self) -> None:
        state = {
            "learned": self.learned,
            "blocked": sorted(self.blocked),
            "certifier": self.certifier.to_state(),
            "stacker": self.stacker.to_state(),
            **self.audits.to_state(),
            "watch": self.watch.to_state(),
            "rollbacks": self.rollbacks,
            "framing": sorted(self.judge.framing.known),
            "position": self.position,
        }
        self.files.save(self.models.all(), self.tokenizer, self.memory, self.consistency, state)
        self.audits.new_period()

    def status(self) -> dict[str, Any]:
        return {
            "learned": self.learned,
            "phase": self.phase,
            "sample_rate": self.standing.sample_rate,  # the schedule's, or more while a certificate is new
            "threshold": self.threshold,
            "max_bad_local": self.config.max_bad_local,
            "certified": self.threshold is not None,
            "bound": self.certifier.describe(self.threshold),  # over served local answers, at every answer
            **self.audits.summary(),
            "rollbacks": self.rollbacks,
        }
