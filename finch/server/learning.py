"""The learning loop as the server sees it: decide from the trainer's latest serving snapshot, take
users' verdicts, and keep the trainer's process running.

The trainer learns in its own process (``finch.learning.trainer``, supervised by
``finch.server.supervisor``) from the request log the server writes. It publishes a serving
snapshot whenever it has learned; a watcher thread here notices the new file and builds a
``Serving`` from it off the request path, then swaps it in whole. A request takes whichever
``Serving`` is current when it arrives, so it never waits for the trainer, and a trainer that is
slow, busy or dead leaves serving exactly as it was.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from finch.config import Settings
from finch.conversation import Conversation
from finch.learning import snapshot
from finch.learning.consistency import question_key
from finch.learning.judge import Judge
from finch.learning.serving import Serving
from finch.learning.status import learning_status
from finch.learning.trainer import snapshot_path
from finch.metrics import Metrics
from finch.models.generator import generator_config
from finch.models.tokenizer import load_or_build
from finch.policy.decide import Decision
from finch.server.pressure import Pressure
from finch.server.supervisor import TrainerProcess
from finch.store.log import Log
from finch.store.rows import feedback_row
from finch.vocabulary import Reason, Route

log = logging.getLogger(__name__)

_RECENT_LOCAL = 2048  # local answers kept in memory for feedback that arrives before the log is written
_WATCH_S = 0.01  # how often the watcher looks for a new snapshot (one stat call)
_VERDICTS_GAP_S = 0.05  # users' verdicts are read from the log at most about this often
# The request path's models run on one thread. With two, a decision that follows an idle moment (as
# most do: requests come with gaps) often waits for the second thread to wake at every matrix
# product: measured on 2 cores with 0.3 s between decisions, 75% of them took 18-19 ms instead of
# 10-12 (one thread: 11.5-12.3 ms), though back to back two threads are faster (9.0 against 11.0).
# It also leaves the other core to the event loop that forwards requests. The trainer's process
# sets its own.
_MODEL_THREADS = 1


class LearningLoop:
    def __init__(self, settings: Settings, store: Log, metrics: Metrics, pressure: Pressure | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.pressure = pressure
        # Built here, before the trainer starts, so that the two processes never build it at once.
        # (The log's texts are read only if the tokenizer must be built: recent_texts is a generator.)
        self.tokenizer = load_or_build(settings.home / "tokenizer.json", store.recent_texts())
        self.judge = Judge(settings.judge_threshold)
        # People ask the same things again: a repeated question skips its embedding on the request path.
        self._question_vec = functools.lru_cache(maxsize=4096)(lambda text: self.judge.embed([text])[0])
        self.trainer = TrainerProcess(settings)
        self.path = snapshot_path(settings)
        self.serving: Serving | None = None
        self._loaded: tuple[int, int, int] | None = None  # (inode, mtime, size) of the snapshot file loaded
        self._blocked_since: set[str] = set()  # questions users reported since the snapshot being served
        self._recent: OrderedDict[str, tuple[Conversation, str]] = OrderedDict()
        self._rng = random.Random(settings.seed)
        self._rng_lock = threading.Lock()
        self._local_thread = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="finch-local",
            initializer=torch.set_num_threads,
            initargs=(_MODEL_THREADS,),
        )
        self._attempting = False
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._verdicts: threading.Thread | None = None
        self.load_new_snapshot()  # what the last run learned serves from the first request

    @property
    def max_chars(self) -> int:
        """Conversations longer than this (about the generator's context) are never answered locally."""
        serving = self.serving
        return serving.max_chars if serving is not None else generator_config(self.settings.preset, 1).max_len * 3

    def start(self) -> None:
        self.judge.embed(["warm up"])  # load the embedding model now, not on a request
        if self.settings.start_trainer:
            self.trainer.start()
        self._watcher = threading.Thread(target=self._watch, name="finch-snapshot-watcher", daemon=True)
        self._watcher.start()
        self._verdicts = threading.Thread(target=self._follow_verdicts, name="finch-verdicts", daemon=True)
        self._verdicts.start()

    def stop(self) -> None:
        self._stopping.set()
        self._local_thread.shutdown(wait=True)
        self.trainer.stop()
        for thread in (self._watcher, self._verdicts):
            if thread is not None:
                thread.join(timeout=5)

    # -- the request path ------------------------------------------------------------------------

    async def decide(self, conversation: Conversation, max_tokens: int) -> Decision:
        """One local attempt at a time, on finch's one local-answer thread: under load, a request
        that would wait for the models is forwarded at once instead (``local_busy``), so the forward
        path never queues behind them. (One thread, not the server's pool of them: each thread that
        runs the models keeps its own allocator arena, and resident memory grew with every one.)"""
        serving = self.serving
        if serving is None or serving.standing.phase == "cold_start":
            return Decision(Route.FORWARD, Reason.COLD_START)  # known without the models: no trip to their thread
        if self._attempting:  # only the event loop's thread reads or writes this flag
            return Decision(Route.FORWARD, Reason.LOCAL_BUSY)
        if self.pressure is not None and self.pressure.busy(others=1):  # other requests are waiting
            return Decision(Route.FORWARD, Reason.SERVER_BUSY)
        self._attempting = True
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._local_thread, self.decide_now, conversation, max_tokens, serving)
        finally:
            self._attempting = False

    def decide_now(self, conversation: Conversation, max_tokens: int, serving: Serving | None = None) -> Decision:
        """The decision on this thread, from the current snapshot (or ``serving``)."""
        serving = serving or self.serving
        if serving is None:
            return Decision(Route.FORWARD, Reason.COLD_START)
        return serving.decide(conversation, max_tokens, self._draw, self._blocked_since)

    def _draw(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def served(self, request_id: str, conversation: Conversation, answer: str) -> None:
        self._recent[request_id] = (conversation, answer)
        while len(self._recent) > _RECENT_LOCAL:
            self._recent.popitem(last=False)

    def feedback(self, request_id: str, good: bool) -> dict[str, Any] | None:
        """A user's verdict on an answer. None when finch never saw that request."""
        self.store.flush(timeout=2.0)  # the request's own row may still be on the writer's queue
        found = self._recent.get(request_id) or self.store.stored_local_answer(request_id)
        known = found is not None or self.store.request_is_logged(request_id)
        if not known:
            return None
        self.store.submit(feedback_row(request_id, good))  # the trainer learns it from the log
        if found is None:  # a forwarded answer: recorded, but there is no local attempt to learn from
            return {"request_id": request_id, "learned": False}
        if not good:
            self._blocked_since.add(question_key(found[0]))  # at once: the very next ask forwards
        return {"request_id": request_id, "learned": True}

    # -- snapshots -------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.wait(_WATCH_S):
            try:
                self.load_new_snapshot()
            except Exception:  # a bad snapshot must not stop the next one from loading
                log.exception("could not load the serving snapshot")
                self._stopping.wait(1.0)

    def _follow_verdicts(self) -> None:
        """Users' "bad answer" marks, read from the log whichever replica took them: every replica
        stops serving that question at once, without waiting for the trainer's next snapshot."""
        serving = self.serving
        cursor = serving.position.get("feedback", 0) if serving is not None else 0
        while not self._stopping.is_set():
            try:
                rows, cursor = self.store.events("feedback", cursor, 256)
                for row in rows:
                    if not row["good"]:
                        self._blocked_since.add(question_key(Conversation.from_json(row["conversation"])))
                if not rows:
                    self.store.wait(self._stopping, 1.0)
                    self._stopping.wait(_VERDICTS_GAP_S)
            except Exception:  # the log is away: look again later
                log.exception("could not read users' verdicts from the log")
                self._stopping.wait(1.0)

    def load_new_snapshot(self) -> bool:
        """Swap in the snapshot file when it has changed since the last load. True when it did."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if identity == self._loaded:
            return False
        found = snapshot.read(self.path)
        self._loaded = identity
        if found is None:
            return False
        serving = Serving(found, self.settings, self.tokenizer, self._question_vec, self.judge.embed_answers)
        self.judge.framing.known = serving.framing  # one reference each: a request sees old or new
        self.serving = serving
        self._blocked_since -= serving.blocked  # the trainer has learned those verdicts
        return True

    def drain(self, timeout: float = 600.0) -> bool:
        """Wait until everything logged so far is learned and being served from (tests, demos,
        benchmarks). A client may have its answer a moment before the server has logged it, so
        this first waits for the requests in flight."""
        deadline = time.monotonic() + timeout
        while self.pressure is not None and self.pressure.in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        self.store.flush()
        end = self.store.end()
        while time.monotonic() < deadline:
            serving = self.serving
            if serving is not None and all(serving.position.get(t, 0) >= seq for t, seq in end.items()):
                return True
            time.sleep(0.01)
        return False

    # -- what people see -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        serving = self.serving
        published = serving.published if serving is not None else None
        position = serving.position if serving is not None else {}
        status = learning_status(published, self.settings.max_bad_local, self.store.backlog(position))
        status["trainer_restarts"] = self.trainer.restarts
        status["trainer_pid"] = self.trainer.pid
        return status

    def update_metrics(self) -> None:
        status = self.status()
        m = self.metrics
        m.trainer_backlog.set(status["trainer_backlog"])
        m.trainer_restarts.set(status["trainer_restarts"])
        m.learned.set(status["learned"])
        m.audits.labels("good").set(status["audits"] - status["audits_bad"])
        m.audits.labels("bad").set(status["audits_bad"])
        low, high = status["bad_local_interval"]
        m.bad_local.labels("estimate").set(status["bad_local_estimate"] or 0.0)
        m.bad_local.labels("low").set(low)
        m.bad_local.labels("high").set(high)
        m.threshold.set(-1 if status["threshold"] is None else status["threshold"])
