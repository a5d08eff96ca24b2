"""The learning loop as the server sees it: decide from the trainer's latest serving snapshot, take
users' verdicts, and keep the trainer's process running.

Each namespace (``finch.server.principals``) is a ``Tenant`` here: its own snapshot, tokenizer,
judge's framing and users' marks. Nothing of one is consulted for another. Tenants are made on a
namespace's first request and their snapshots loaded off the request path; within ``max_loaded_mb``
of snapshots and ``_MAX_TENANTS`` namespaces, the least recently asked is unloaded first (asked again,
it loads again, its requests forwarded meanwhile).

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
import random
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from finch.config import Settings
from finch.conversation import Conversation, question_key
from finch.learning.home import namespace_settings
from finch.learning.serving import Serving
from finch.learning.status import learning_status
from finch.metrics import Metrics
from finch.models.generator import generator_config
from finch.models.tokenizer import load_or_build
from finch.policy.decide import Decision
from finch.server import marks
from finch.server.pressure import Pressure
from finch.server.supervisor import TrainerProcess
from finch.server.tenants import Tenant
from finch.store.log import Log
from finch.store.rows import feedback_row
from finch.vocabulary import DEFAULT_NAMESPACE, Reason, Route

log = logging.getLogger(__name__)

_RECENT_LOCAL = 2048  # local answers kept in memory for feedback that arrives before the log is written
_WATCH_S = 0.01  # how often the watcher looks for a new snapshot (one stat call)
_MAX_TENANTS = 256  # namespaces kept loaded in one server
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
        self.trainer = TrainerProcess(settings)
        self._tenants: OrderedDict[str, Tenant] = OrderedDict()
        self._tenants_lock = threading.Lock()
        # The default namespace's tokenizer is built here, before the trainer starts, so that the two
        # processes never build it at once. (The log's texts are read only if it must be built.)
        default = DEFAULT_NAMESPACE
        tokenizer = load_or_build(settings.home / "tokenizer.json", store.recent_texts(namespace=default))
        self._tenants[default] = Tenant(default, settings, tokenizer)
        self.judge = self._tenants[default].judge  # the default namespace's; every tenant's shares its model
        # People ask the same things again: a repeated question skips its embedding on the request path.
        # (A question's embedding is the model's alone, the same in every namespace.)
        self._question_vec = functools.lru_cache(maxsize=4096)(lambda text: self.judge.embed([text])[0])
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
        # A tenant reads its own earlier marks and forgets on loading; the follower reads what comes after.
        self._follow_from = {stream: store.end(None)[stream] for stream in marks.FOLLOWED}
        self.load_new_snapshot(self._tenants[default])  # what the last run learned serves from the first request

    @property
    def serving(self) -> Serving | None:
        """The default namespace's serving snapshot."""
        return self._tenants[DEFAULT_NAMESPACE].serving

    @property
    def max_chars(self) -> int:
        """Conversations longer than this (about the generator's context) are never answered locally."""
        return generator_config(self.settings.preset, 1).max_len * 3

    def tenant(self, namespace: str) -> Tenant:
        """The namespace's tenant, made (empty: its snapshot loads off the request path) on first ask."""
        with self._tenants_lock:
            found = self._tenants.get(namespace)
            if found is None:
                found = self._tenants[namespace] = Tenant(namespace, namespace_settings(self.settings, namespace))
            self._tenants.move_to_end(namespace)
            self._unload_past_the_cap()
            return found

    def _unload_past_the_cap(self) -> None:
        """Unload the least recently asked namespaces (never the default, nor the one asked last)
        while more are loaded than the caps allow. Called under ``_tenants_lock``."""
        cap = self.settings.max_loaded_mb * 1024 * 1024
        while len(self._tenants) > 2:
            if len(self._tenants) <= _MAX_TENANTS and sum(t.size for t in self._tenants.values()) <= cap:
                return
            oldest = next(n for n in self._tenants if n != DEFAULT_NAMESPACE)
            del self._tenants[oldest]

    def start(self) -> None:
        self.judge.embed(["warm up"])  # load the embedding model now, not on a request
        if self.settings.start_trainer:
            self.trainer.start()
        self._watcher = threading.Thread(target=self._watch, name="finch-snapshot-watcher", daemon=True)
        self._watcher.start()
        follow = functools.partial(marks.follow, self.store, self._tenants.get, self._follow_from, self._stopping)
        self._verdicts = threading.Thread(target=follow, name="finch-verdicts", daemon=True)
        self._verdicts.start()

    def stop(self) -> None:
        self._stopping.set()
        self._local_thread.shutdown(wait=True)
        self.trainer.stop()
        for thread in (self._watcher, self._verdicts):
            if thread is not None:
                thread.join(timeout=5)

    # -- the request path ------------------------------------------------------------------------

    async def decide(
        self, conversation: Conversation, max_tokens: int, namespace: str = DEFAULT_NAMESPACE, end_user: str = ""
    ) -> Decision:
        """One local attempt at a time, on finch's one local-answer thread: under load, a request
        that would wait for the models is forwarded at once instead (``local_busy``), so the forward
        path never queues behind them. (One thread, not the server's pool of them: each thread that
        runs the models keeps its own allocator arena, and resident memory grew with every one.)"""
        tenant = self.tenant(namespace)
        serving = tenant.serving
        if serving is None or serving.standing.phase == "cold_start":
            return Decision(Route.FORWARD, Reason.COLD_START)  # known without the models: no trip to their thread
        if self._attempting:  # only the event loop's thread reads or writes this flag
            return Decision(Route.FORWARD, Reason.LOCAL_BUSY)
        if self.pressure is not None and self.pressure.busy(others=1):  # other requests are waiting
            return Decision(Route.FORWARD, Reason.SERVER_BUSY)
        self._attempting = True
        try:
            loop = asyncio.get_running_loop()
            decide = functools.partial(self.decide_now, conversation, max_tokens, serving, namespace, end_user)
            return await loop.run_in_executor(self._local_thread, decide)
        finally:
            self._attempting = False

    def decide_now(
        self,
        conversation: Conversation,
        max_tokens: int,
        serving: Serving | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        end_user: str = "",
    ) -> Decision:
        """The decision on this thread, from the namespace's current snapshot (or ``serving``), for
        ``end_user`` (``finch.policy.privacy``)."""
        tenant = self.tenant(namespace)
        serving = serving or tenant.serving
        if serving is None:
            return Decision(Route.FORWARD, Reason.COLD_START)
        return serving.decide(conversation, max_tokens, self._draw, tenant.blocked_since, end_user)

    def _draw(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def served(
        self, request_id: str, conversation: Conversation, answer: str, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        recent = self.tenant(namespace).recent
        recent[request_id] = (conversation, answer)
        while len(recent) > _RECENT_LOCAL:
            recent.popitem(last=False)

    def feedback(self, request_id: str, good: bool, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any] | None:
        """A user's verdict on an answer of their namespace. None when finch never saw that request
        there."""
        self.store.flush(timeout=2.0)  # the request's own row may still be on the writer's queue
        tenant = self.tenant(namespace)
        found = tenant.recent.get(request_id) or self.store.stored_local_answer(request_id, namespace)
        known = found is not None or self.store.request_is_logged(request_id, namespace)
        if not known:
            return None
        self.store.submit(feedback_row(request_id, good, namespace))  # the trainer learns it from the log
        if found is None:  # a forwarded answer: recorded, but there is no local attempt to learn from
            return {"request_id": request_id, "learned": False}
        if not good:
            tenant.blocked_since.add(question_key(found[0]))  # at once: the very next ask forwards
        return {"request_id": request_id, "learned": True}

    def forget(self, namespace: str, conversation: Conversation | None) -> int:
        """Forget one question of the namespace, or (None) everything it taught
        (``Log.forget_question``): at once on this replica, as the others read it from the log."""
        deleted = self.store.forget_question(namespace, conversation)
        self.store.flush(timeout=5.0)
        tenant = self.tenant(namespace)
        if conversation is None:
            tenant.withdraw(self.store.end(namespace)["forgets"])
        else:
            tenant.blocked_since.add(question_key(conversation))
        return deleted

    # -- snapshots -------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.wait(_WATCH_S):
            with self._tenants_lock:
                tenants = list(self._tenants.values())
            for tenant in tenants:
                try:
                    if self.load_new_snapshot(tenant):
                        with self._tenants_lock:
                            self._unload_past_the_cap()
                except Exception:  # a bad snapshot must not stop the next one from loading
                    log.exception("could not load the serving snapshot of namespace %r", tenant.namespace)
                    self._stopping.wait(1.0)

    def load_new_snapshot(self, tenant: Tenant | None = None) -> bool:
        """Swap in the tenant's snapshot file (the default's) when it has changed since the last
        load. True when it did."""
        tenant = tenant or self._tenants[DEFAULT_NAMESPACE]
        first = tenant.serving is None
        if not tenant.load_new_snapshot(self._question_vec):
            return False
        if first and tenant.serving is not None:  # what was marked since it, before this server followed it
            for stream in marks.FOLLOWED:
                after = tenant.serving.position.get(stream, 0)
                marks.apply(self._tenants.get, stream, self.store.events(stream, after, 100_000, tenant.namespace)[0])
        return tenant.serving is not None

    def drain(self, timeout: float = 600.0, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """Wait until everything logged so far in ``namespace`` is learned and being served from
        (tests, demos, benchmarks). A client may have its answer a moment before the server has
        logged it, so this first waits for the requests in flight."""
        deadline = time.monotonic() + timeout
        while self.pressure is not None and self.pressure.in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        self.store.flush()
        end = self.store.end(namespace)
        tenant = self.tenant(namespace)
        while time.monotonic() < deadline:
            serving = tenant.serving
            if serving is not None and all(serving.position.get(t, 0) >= seq for t, seq in end.items()):
                return True
            time.sleep(0.01)
        return False

    # -- what people see -------------------------------------------------------------------------

    def status(self, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
        serving = self.tenant(namespace).serving
        published = serving.published if serving is not None else None
        position = serving.position if serving is not None else {}
        status = learning_status(published, self.settings.max_bad_local, self.store.backlog(position, namespace))
        status["trainer_restarts"] = self.trainer.restarts
        status["trainer_pid"] = self.trainer.pid
        return status

    def update_metrics(self) -> None:
        """The learning gauges, one series per namespace this replica has loaded."""
        m = self.metrics
        m.trainer_restarts.set(self.trainer.restarts)
        with self._tenants_lock:
            loaded = list(self._tenants)
        for namespace in loaded:
            status = self.status(namespace)
            m.trainer_backlog.labels(namespace).set(status["trainer_backlog"])
            m.learned.labels(namespace).set(status["learned"])
            m.audits.labels(namespace, "good").set(status["audits"] - status["audits_bad"])
            m.audits.labels(namespace, "bad").set(status["audits_bad"])
            low, high = status["bad_local_interval"]
            m.bad_local.labels(namespace, "estimate").set(status["bad_local_estimate"] or 0.0)
            m.bad_local.labels(namespace, "low").set(low)
            m.bad_local.labels(namespace, "high").set(high)
            m.threshold.labels(namespace).set(-1 if status["threshold"] is None else status["threshold"])
