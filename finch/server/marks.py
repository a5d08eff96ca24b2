"""What every replica follows in the log itself, not only through its trainer's snapshots: users'
"bad answer" marks and what namespaces asked to forget. Whichever replica took one, every replica
stops serving that question (or that namespace's snapshot) within a moment of its commit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from finch.conversation import Conversation, question_key
from finch.server.tenants import Tenant
from finch.store.log import Log

log = logging.getLogger(__name__)

FOLLOWED = ("feedback", "forgets")  # the streams a replica follows
_GAP_S = 0.05  # read from the log at most about this often


def follow(
    store: Log, tenant: Callable[[str], Tenant | None], start: dict[str, int], stopping: threading.Event
) -> None:
    """Read the streams from ``start`` on, every namespace's, until ``stopping``; ``tenant`` gives a
    loaded namespace's tenant (one not loaded reads them when it loads: ``apply`` from its snapshot's place)."""
    cursors = dict(start)
    while not stopping.is_set():
        try:
            read = 0
            for stream in FOLLOWED:
                rows, cursors[stream] = store.events(stream, cursors[stream], 256, namespace=None)
                apply(tenant, stream, rows)
                read += len(rows)
            if not read:
                store.wait(stopping, 1.0)
                stopping.wait(_GAP_S)
        except Exception:  # the log is away: look again later
            log.exception("could not read users' verdicts from the log")
            stopping.wait(1.0)


def apply(tenant: Callable[[str], Tenant | None], stream: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        found = tenant(row["namespace"])
        if found is None or (stream == "feedback" and row["good"]):
            continue
        if row["conversation"] is None:  # forget everything: its snapshot is served no more
            found.withdraw(row["seq"])
        else:
            found.blocked_since.add(question_key(Conversation.from_json(row["conversation"])))
