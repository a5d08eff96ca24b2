"""The learning loop as the server sees it: build the ensemble and the trainer, decide on the
request path, and turn written request records into learning events (never on the request path)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from finch.config import Settings, parse_sampling
from finch.conversation import Conversation
from finch.learning.ensemble import Ensemble, LearningConfig
from finch.learning.trainer import ClaudeAnswer, Feedback, Served, Trainer
from finch.metrics import Metrics
from finch.policy.decide import AUDITED_REASONS, Decision
from finch.policy.schedule import Schedule
from finch.server.pressure import Pressure
from finch.sse import ResponseSummary
from finch.store import queries
from finch.store.db import RequestRecord, Store, feedback_row
from finch.vocabulary import Reason, Route

log = logging.getLogger(__name__)

_RECENT_LOCAL = 2048  # local answers kept in memory for feedback that arrives before the log is written


class LearningLoop:
    def __init__(self, settings: Settings, store: Store, metrics: Metrics, pressure: Pressure | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        config = LearningConfig(
            preset=settings.preset,
            max_bad_local=settings.max_bad_local,
            judge_threshold=settings.judge_threshold,
            schedule=Schedule(
                cold_start=settings.cold_start,
                conservative_until=settings.conservative_until,
                conservative_p=settings.conservative_threshold,
                sampling=parse_sampling(settings.sampling),
            ),
            local_budget_s=settings.local_budget_s,
            max_local_tokens=settings.max_local_tokens,
            retrieval=settings.retrieval,
            seed=settings.seed,
        )
        self.ensemble = Ensemble(settings.home, config, seed_texts=_stored_texts(store))
        self.pressure = pressure
        quiet = pressure.quiet if pressure is not None else None
        self.trainer = Trainer(self.ensemble, store, save_every=settings.save_every, quiet=quiet)
        self._recent: OrderedDict[str, tuple[Conversation, str]] = OrderedDict()
        self._local_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finch-local")
        self._attempting = False
        store.add_listener(self.on_written)

    @property
    def max_chars(self) -> int:
        """Conversations longer than this (about the generator's context) are never answered locally."""
        return self.ensemble.generator.config.max_len * 3

    def start(self) -> None:
        self.ensemble.judge.embed(["warm up"])  # load the embedding model now, not on a request
        self.trainer.start()

    def stop(self) -> None:
        self._local_thread.shutdown(wait=True)
        self.trainer.stop()

    async def decide(self, conversation: Conversation, max_tokens: int) -> Decision:
        """One local attempt at a time, on finch's one local-answer thread: under load, a request
        that would wait for the models is forwarded at once instead (``local_busy``), so the forward
        path never queues behind them. (One thread, not the server's pool of them: each thread that
        runs the models keeps its own allocator arena, and resident memory grew with every one.)"""
        if self.ensemble.standing.phase == "cold_start":
            return Decision(Route.FORWARD, Reason.COLD_START)  # known without the models: no trip to their thread
        if self._attempting:  # only the event loop's thread reads or writes this flag
            return Decision(Route.FORWARD, Reason.LOCAL_BUSY)
        if self.pressure is not None and self.pressure.busy(others=1):  # other requests are waiting
            return Decision(Route.FORWARD, Reason.SERVER_BUSY)
        self._attempting = True
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._local_thread, self.ensemble.decide, conversation, max_tokens)
        finally:
            self._attempting = False

    def served(self, request_id: str, conversation: Conversation, answer: str) -> None:
        self._recent[request_id] = (conversation, answer)
        while len(self._recent) > _RECENT_LOCAL:
            self._recent.popitem(last=False)

    def on_written(self, record: RequestRecord, summary: ResponseSummary, cost: float) -> None:
        """Store listener (writer thread): a forwarded eligible answer becomes a learning event, and
        a local answer is counted toward the bound."""
        if record.conversation is None or record.status != 200:
            return
        decision = Decision(
            record.route,
            record.reason,
            record.local_answer,
            record.p_router,
            record.p_validator,
            record.p_good,
            record.audit_chance,
            record.tried,
        )
        if record.route == Route.LOCAL:
            self.trainer.submit(Served(record.id, decision))
        elif record.route == Route.FORWARD and summary.text:
            audit = decision if record.reason in AUDITED_REASONS else None
            self.trainer.submit(ClaudeAnswer(record.id, record.conversation, summary.text, audit))

    def feedback(self, request_id: str, good: bool) -> dict[str, Any] | None:
        """A user's verdict on an answer. None when finch never saw that request."""
        self.store.flush(timeout=2.0)  # the request's own row may still be on the writer's queue
        found = self._recent.get(request_id) or queries.stored_local_answer(self.store.path, request_id)
        known = found is not None or queries.request_is_logged(self.store.path, request_id)
        if not known:
            return None
        self.store.submit(feedback_row(request_id, good))
        if found is None:  # a forwarded answer: recorded, but there is no local attempt to learn from
            return {"request_id": request_id, "learned": False}
        conversation, answer = found
        if not good:
            self.ensemble.block(conversation)  # at once: the very next ask forwards
        self.trainer.submit(Feedback(request_id, conversation, answer, good))
        return {"request_id": request_id, "learned": True}

    def status(self) -> dict[str, Any]:
        status = self.ensemble.status()
        status["trainer_backlog"] = self.trainer.backlog
        status["learning_dropped"] = self.trainer.dropped
        return status

    def update_metrics(self) -> None:
        status = self.status()
        m = self.metrics
        m.learning_dropped.set(self.trainer.dropped)
        m.learned.set(status["learned"])
        m.audits.labels("good").set(self.ensemble.audits["good"])
        m.audits.labels("bad").set(self.ensemble.audits["bad"])
        low, high = status["bad_local_interval"]
        m.bad_local.labels("estimate").set(status["bad_local_estimate"] or 0.0)
        m.bad_local.labels("low").set(low)
        m.bad_local.labels("high").set(high)
        m.threshold.set(-1 if status["threshold"] is None else status["threshold"])


def _stored_texts(store: Store) -> Iterator[str]:
    """Recent conversations and answers: extra seed text when the tokenizer is (re)built. A
    generator, so the log is only read if the tokenizer actually has to be built."""
    yield from queries.recent_texts(store.path)
