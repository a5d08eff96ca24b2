"""The trainer: a background thread that turns learning events into model updates.

Events arrive on a bounded queue. ``submit`` never blocks: when the trainer falls behind, the oldest
events are dropped and counted (fresh traffic is worth more than stale). After each event the
serving snapshot is republished; every ``save_every`` events, and on shutdown, checkpoints are
written. Each event's verdict, scores and losses become a row in the ``learning`` table.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from finch.conversation import Conversation
from finch.learning.ensemble import Ensemble
from finch.policy.decide import Decision
from finch.store.db import Store, learning_row

log = logging.getLogger(__name__)

_PUBLISH_EVERY_S = 1.0


@dataclass(frozen=True)
class ClaudeAnswer:
    """A forwarded eligible request and Claude's answer to it."""

    request_id: str
    conversation: Conversation
    teacher_answer: str
    audit: Decision | None = None  # set for an audit: the decision whose local answer was withheld


@dataclass(frozen=True)
class Served:
    """A local answer that went out unaudited: nothing to learn, but it counts toward the bound."""

    request_id: str
    decision: Decision


@dataclass(frozen=True)
class Feedback:
    """A verdict on a local answer, from an audit or from the user."""

    request_id: str
    conversation: Conversation
    local_answer: str
    good: bool


Event = ClaudeAnswer | Feedback | Served


class Trainer:
    def __init__(
        self,
        ensemble: Ensemble,
        store: Store,
        capacity: int = 256,
        save_every: int = 50,
        quiet: Callable[[], bool] | None = None,
        max_pause_s: float = 30.0,
    ) -> None:
        """``quiet()`` false: requests need the CPU; wait before the next event, and let the queue
        shed what piles up meanwhile. Under sustained overload learning goes on, slowly: one event
        at least every ``max_pause_s``."""
        self.ensemble = ensemble
        self.quiet = quiet
        self.max_pause_s = max_pause_s
        self.store = store
        self.save_every = save_every
        self.dropped = 0
        self.processed = 0
        self._events: deque[Event] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._published = 0.0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="finch-trainer", daemon=True)
            self._thread.start()

    def submit(self, event: Event) -> None:
        with self._cond:
            if len(self._events) >= self._capacity:
                self._events.popleft()
                self.dropped += 1
            self._events.append(event)
            self._cond.notify()

    def drain(self, timeout: float = 600.0) -> bool:
        """Wait until every submitted event is learned (tests, demos, benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._events or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    @property
    def backlog(self) -> int:
        return len(self._events)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=120)
            self._thread = None
        try:
            self.ensemble.save()
        except Exception:
            log.exception("could not save the models on shutdown")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._events and not self._stopping:
                    self._cond.wait()
            self._wait_for_quiet()  # the newest events are kept while it waits: the queue sheds the oldest
            with self._cond:
                if self._stopping:
                    return
                if not self._events:
                    continue
                event = self._events.popleft()
                self._busy = True
            try:
                self._learn(event)
            except Exception:
                log.exception("learning from %s failed", type(event).__name__)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _wait_for_quiet(self) -> None:
        if self.quiet is None:
            return
        deadline = time.monotonic() + self.max_pause_s
        while not self.quiet() and not self._stopping and time.monotonic() < deadline:
            time.sleep(0.01)

    def _learn(self, event: Event) -> None:
        started = time.perf_counter()
        if isinstance(event, Served):
            self.ensemble.count_served(event.decision)
            return
        if isinstance(event, ClaudeAnswer):
            judged = self.ensemble.learn_from_claude(event.conversation, event.teacher_answer, event.audit)
            kind = "claude"
        else:
            judged = self.ensemble.learn_from_local_attempt(event.conversation, event.local_answer, good=event.good)
            kind = "feedback"
        if time.monotonic() - self._published >= _PUBLISH_EVERY_S or not self._events:
            # Fresh serving copies at most once a second while busy (copying is not free), and
            # always once the queue is empty, so an idle finch serves what it last learned.
            self.ensemble.publish()
            self._published = time.monotonic()
        self.processed += 1
        if self.processed % self.save_every == 0:
            self.ensemble.save()
        self.store.submit(
            learning_row(
                ts=time.time(),
                request_id=event.request_id,
                kind=kind,
                audit=int(judged.audit_good is not None),
                audit_good=None if judged.audit_good is None else int(judged.audit_good),
                good=None if judged.good is None else int(judged.good),
                divergence=judged.divergence,
                p_router=judged.p_router,
                p_validator=judged.p_validator,
                p_good=judged.p_good,
                threshold=self.ensemble.threshold,
                loss_generator=judged.losses.get("generator"),
                loss_router=judged.losses.get("router"),
                loss_validator=judged.losses.get("validator"),
                seconds=time.perf_counter() - started,
                attempt=judged.attempt,
            )
        )
