"""A trainer process's namespaces: which it learns, and in what turn.

Every namespace learns alone: its own models, memory, bound and snapshot, in its own home
(``finch.learning.home.namespace_settings``), from its own rows of the shared log. A trainer takes
the lease of each namespace that nobody holds (``finch.learning.lease``), as the log names them, and
learns them in turn, a step each; more trainers split the namespaces between them, and a killed
trainer's namespaces pass to the others. The default namespace is always learned when principals
are not told apart (isolation "none"), so a new home serves from its first snapshot as before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from finch.config import Settings
from finch.learning.home import namespace_settings
from finch.learning.lease import leases
from finch.learning.trainer import Trainer
from finch.store.log import Log, open_log
from finch.vocabulary import DEFAULT_NAMESPACE

log = logging.getLogger(__name__)

# How often a trainer looks for namespaces it does not learn yet; and an idle one reads the log at
# least this often, whatever the log says.
_LOOK_S = 1.0


def learn_every_namespace(settings: Settings, stop: threading.Event) -> None:
    """Learn until ``stop``: every namespace whose lease this process holds, a step each in turn."""
    store = open_log(settings)
    store.start()
    trainers: dict[str, Trainer] = {}
    try:
        with leases(settings) as held, contextlib.ExitStack() as sessions:
            looked = 0.0
            while not stop.is_set():
                if time.monotonic() - looked >= _LOOK_S:
                    for namespace in _to_learn(settings, store, trainers, held.take):
                        trainer = Trainer(namespace_settings(settings, namespace), store, namespace)
                        sessions.enter_context(trainer.session(stop))  # ends saved and published
                        trainers[namespace] = trainer
                    looked = time.monotonic()
                if not sum(trainer.step() for trainer in list(trainers.values())):
                    store.wait(stop, _LOOK_S)  # until the log may have grown
    finally:
        store.close()


def catch_up_every_namespace(settings: Settings, progress: Callable[[int], None]) -> bool:
    """Learn what the log holds now, in each namespace nobody else is learning. Whether any was."""
    store = open_log(settings)
    store.start()
    learned = False
    try:
        with leases(settings) as held:
            for namespace in _to_learn(settings, store, {}, held.take):
                Trainer(namespace_settings(settings, namespace), store, namespace).catch_up(progress)
                learned = True
    finally:
        store.close()
    return learned


def _to_learn(settings: Settings, store: Log, learning: dict[str, Trainer], take: Callable[[str], bool]) -> list[str]:
    """The namespaces to start learning now: named in the log (or the default one, when everything
    is one namespace), not learned here yet, and leased to this process."""
    named = store.namespaces()
    if settings.isolation_mode == "none" and DEFAULT_NAMESPACE not in named:
        named = [DEFAULT_NAMESPACE, *named]
    return [namespace for namespace in named if namespace not in learning and take(namespace)]
