"""The trainer: its own process (``finch train``), learning from the request log and publishing the
snapshot that the server serves from.

It reads the log in the order it was written (``finch.store.log.Log.events``): Claude's
answers to eligible requests, local answers served or withheld for an audit, and users' verdicts on
local answers. Whatever is waiting is learned in one pass; then a serving snapshot is published
(``finch.learning.snapshot``): at once when the pass has caught up with the log, at most once a
second while a backlog remains. Nothing is shed: a backlog is a longer pass, not lost traffic.

Every ``save_every`` events, and when it stops, it writes checkpoints that record the position in
the log they cover. Killed at any moment, it restarts from the last checkpoint and learns again what
came after; it publishes nothing until it is back past the position of the snapshot being served,
so a restart never takes serving backwards.

The server starts it at low CPU priority and restarts it when it dies (``finch.server.supervisor``):
requests never wait for it, and it takes whatever CPU they leave.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from finch.config import Settings
from finch.conversation import Conversation
from finch.learning import snapshot, status
from finch.learning.cores import FreeCores
from finch.learning.ensemble import Ensemble
from finch.learning.events import Event, Judged, forget_event
from finch.learning.home import wipe
from finch.policy.decide import AUDITED_REASONS
from finch.store.log import Log
from finch.store.rows import forget_learning_after, learning_row
from finch.vocabulary import DEFAULT_NAMESPACE

log = logging.getLogger(__name__)

_PUBLISH_EVERY_S = 1.0  # at most, while a backlog remains (a snapshot costs a write here and a load there)
_BATCH = 256  # rows read from the log at a time
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_MAX_BATCH = 32  # events learned in one batch at most: more would publish less often
# And no longer than about this: a starved trainer still saves and publishes every few seconds. Not
# much less: answers of 500-1,000 characters cost 0.6 s an event in batches of 3, 0.37 s in 16 or more.
_BATCH_S = 8.0


def snapshot_path(settings: Settings) -> Path:
    return settings.home / "models" / status.FILE


class Trainer:
    def __init__(self, settings: Settings, store: Log, namespace: str = DEFAULT_NAMESPACE) -> None:
        """``settings``: the namespace's (``finch.learning.home.namespace_settings``); ``store``: the
        log, started, whose learning rows are written off this thread."""
        self.settings = settings
        self.store = store
        self.namespace = namespace
        self.ensemble = Ensemble(settings, seed_texts=self.store.recent_texts(namespace=namespace))
        self.path = snapshot_path(settings)
        for stale in self.path.parent.glob(f".{self.path.name}.*"):  # a write cut short by a kill
            stale.unlink(missing_ok=True)
        (self.path.parent / "serving.pt").unlink(missing_ok=True)  # the snapshot's earlier format
        served = snapshot.read(self.path)
        self.generation: int = served["generation"] if served else 0
        # The position of the snapshot being served: publish nothing behind it.
        self._served_position: dict[str, int] = dict(served["position"]) if served else {}
        self._unsaved = 0
        self._published = 0.0
        self._publish_every_s = _PUBLISH_EVERY_S
        self._stop = threading.Event()
        self._cores = FreeCores()
        self._batch_limit = 4  # grows as fast as events prove cheap
        self._wipe = False  # the namespace asked to forget everything: done at the step's end

    def catch_up(self, progress: Callable[[int], None] = lambda left: None) -> None:
        """Learn what the log holds now (``finch import`` with no server running). ``progress`` is
        told the rows left after each step."""
        with self.session(threading.Event()):
            while self.step():
                progress(self.store.backlog(self.ensemble.position, self.namespace))

    @contextlib.contextmanager
    def session(self, stop: threading.Event) -> Iterator[None]:
        """A run of learning: it starts from the checkpoint, and ends saved and published. ``stop``
        cuts a batch short."""
        self._stop = stop
        # The rows a killed predecessor wrote past this checkpoint: their events are learned again.
        self.store.submit(forget_learning_after(self.ensemble.position, self.namespace))
        self.publish()
        yield
        self.ensemble.save()
        self.publish(force=True)

    def step(self) -> int:
        """Learn what is waiting in the log, up to ``_MAX_BATCH`` events or about ``_BATCH_S`` of
        them, in one batch when there is more than one; save and publish as due. Returns how many
        events were read."""
        limit = self._batch_limit
        before = dict(self.ensemble.position)
        events = list(itertools.islice(self._waiting(), limit))
        if events:  # an idle poll neither samples the machine nor touches torch
            torch.set_num_threads(self._cores.free())
        batch, started_batch = len(events) > 1, time.perf_counter()
        if batch:  # Claude's answers in it are each judged against an attempt of the generator's
            self.ensemble.begin_batch([e.conversation for e in events if e.learns_from_claude])
        learned: list[tuple[Event, str, Judged, float]] = []
        for event in events:
            if self._stop.is_set():  # asked to stop: the rest waits in the log for the next run
                break
            started = time.perf_counter()
            done = self._learn(event)
            if done is not None:
                learned.append((event, *done, time.perf_counter() - started))
            self.ensemble.position[event.table] = event.seq
        if batch:
            started = time.perf_counter()
            losses = self.ensemble.end_batch()
            share = (time.perf_counter() - started) / max(1, len(learned))  # the steps' time, shared out
            learned = [(e, kind, _with_losses(judged, losses), s + share) for e, kind, judged, s in learned]
        if events:  # batches of about _BATCH_S: a starved trainer still saves and publishes often
            per_event = (time.perf_counter() - started_batch) / len(events)
            self._batch_limit = max(1, min(_MAX_BATCH, int(_BATCH_S / max(per_event, 1e-3))))
        if self._wipe:  # after the batch; what this step learned is learned again, by the new models
            self._start_again(before)
            learned = []
        threshold = self.ensemble.threshold
        for event, kind, judged, seconds in learned:
            self.store.submit(_row(event, kind, judged, threshold, seconds, self.namespace))
        self._unsaved += len(learned)
        if self._unsaved >= self.settings.save_every:
            self.ensemble.save()
            self._unsaved = 0
        caught_up = len(events) < limit
        due = time.monotonic() - self._published >= self._publish_every_s
        # Publish what the last snapshot lacks, even rows with nothing to learn (drain() waits on
        # them): at once when the log is read to its end, else when due.
        if self.ensemble.position != self._served_position and (caught_up or due):
            self.publish()
        return len(events)

    def publish(self, force: bool = False) -> None:
        """Publish a serving snapshot, unless it would be behind the one being served."""
        position = self.ensemble.position
        behind = any(position.get(table, 0) < seq for table, seq in self._served_position.items())
        if behind and not force:
            return
        started = time.monotonic()
        self.generation += 1
        snapshot.write(self.path, snapshot.capture(self.ensemble, self.generation))
        self._served_position = dict(position)
        self._published = time.monotonic()
        # While a backlog remains, publishing may take a tenth of the trainer's time at most.
        self._publish_every_s = max(_PUBLISH_EVERY_S, 10 * (self._published - started))

    def _waiting(self) -> Iterator[Event]:
        """The log's rows after the ensemble's position, oldest first (the caller moves the position
        past each one it learns; here it moves past the rows with nothing to learn)."""
        position = self.ensemble.position
        streams = (("requests", Event.from_request), ("feedback", Event.from_feedback), ("forgets", forget_event))
        for table, make in streams:
            while True:
                rows, reached = self.store.events(table, position.get(table, 0), _BATCH, self.namespace)
                yield from (make(row) for row in rows)
                position[table] = max(position.get(table, 0), reached)
                if len(rows) < _BATCH:
                    break

    def _forget(self, conversation: Conversation | None) -> None:
        """What the namespace asked to forget: one question, or (None) everything it taught, which
        the step ends by wiping (``_start_again``)."""
        if conversation is None:
            self._wipe = True
        else:
            self.ensemble.block(conversation, forget=True)

    def _start_again(self, before: dict[str, int]) -> None:
        """Forget everything the namespace taught: its models, memory, tokenizer and bound start
        again from nothing (cold start). They read on from where this step began (``before``), but
        past the forgets it read: rows the namespace wrote before forgetting have nothing left to
        learn from (their conversations went with the row), and rows it wrote after are learned
        anew. The snapshot that replaces the served one is the next generation: every replica loads it."""
        position = {**before, "forgets": self.ensemble.position.get("forgets", 0)}
        wipe(self.settings.home)
        self.ensemble = Ensemble(self.settings, seed_texts=self.store.recent_texts(namespace=self.namespace))
        self.ensemble.position = position
        self.ensemble.save()
        self._unsaved, self._wipe = 0, False
        self.publish(force=True)

    def _learn(self, event: Event) -> tuple[str, Judged] | None:
        """(kind, what was learned), or None for an answer that only counts toward the bound."""
        ensemble, decision = self.ensemble, event.decision
        audit = decision if decision is not None and decision.reason in AUDITED_REASONS else None
        try:
            if event.table == "forgets":
                self._forget(event.conversation)
                return None
            if event.table == "feedback":
                assert event.conversation is not None and event.answer is not None
                return "feedback", ensemble.learn_from_verdict(event.conversation, event.answer, bool(event.good))
            if event.served_locally:
                assert decision is not None
                ensemble.count_served(decision)  # served unaudited: it counts toward the bound
                return None
            assert event.conversation is not None and event.answer is not None
            return "claude", ensemble.learn_from_claude(
                event.conversation, event.answer, audit, event.max_tokens, event.end_user
            )
        except Exception:  # one event that cannot be learned must cost only itself
            log.exception("learning from request %s failed", event.request_id)
            if audit is not None:
                ensemble.count_unlearned(audit)
            return None


def _with_losses(judged: Judged, losses: dict[str, float | None]) -> Judged:
    """A batch's event: the batch's losses, for the models it taught."""
    return dataclasses.replace(judged, losses={k: v for k, v in losses.items() if k in judged.losses})


def _row(event: Event, kind: str, judged: Judged, threshold: float | None, seconds: float, namespace: str) -> Any:
    return learning_row(
        namespace=namespace,
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
        threshold=threshold,
        loss_generator=judged.losses.get("generator"),
        loss_router=judged.losses.get("router"),
        loss_validator=judged.losses.get("validator"),
        seconds=seconds,
        attempt=judged.attempt,
        seq=event.seq,
    )


def run_until_signalled(settings: Settings, parent: int | None = None) -> None:
    """``finch train``: learn until SIGTERM or SIGINT, then save and publish once more. Started by
    a server (``parent``), it dies with it.

    One trainer at a time learns a namespace: a second waits for the first's lease
    (``finch.learning.lease``), and learns the namespaces nobody holds (``finch.learning.namespaces``)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if parent is not None:
        _die_with_parent()
        if os.getppid() != parent:  # it died before that took hold
            return

        def watch_parent() -> None:
            while not stop.wait(1.0):
                if os.getppid() != parent:  # the server died without stopping us: an orphan learns for nobody
                    stop.set()

        threading.Thread(target=watch_parent, name="finch-parent-watch", daemon=True).start()
    from finch.learning.namespaces import learn_every_namespace

    learn_every_namespace(settings, stop)  # the leases go with the process, however it ends


def learn_waiting(settings: Settings, progress: Callable[[int], None] = lambda left: None) -> bool:
    """Learn what the log holds now, in this process, in each namespace no other trainer is learning
    (a running server's trainer, which then learns it). Returns whether it learned any."""
    from finch.learning.namespaces import catch_up_every_namespace

    return catch_up_every_namespace(settings, progress)


def _die_with_parent() -> None:
    """On Linux, the kernel kills this process the moment its parent (the server) dies, as a
    thread of the server would die with it: nothing of it outlives a killed server to race its
    successor over the home. Elsewhere the parent watch stops it within a second."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
