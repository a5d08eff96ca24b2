"""The trainer's lease: one trainer at a time learns from a log, and a killed one's lease passes on.

Embedded, the lease is an exclusive lock on ``FINCH_HOME/models/trainer.lock``; in the team tier it
is a PostgreSQL session advisory lock, held on a connection of its own. Either way the operating
system or the database releases it when its holder dies, however it dies, and the next trainer that
asks takes it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator

from finch.config import Settings
from finch.store.db import ensure_private_dir

# The advisory lock key of the team tier's trainer lease ("finch" and 3; the log's own locks are 1 and 2).
_TRAINER_LOCK = 0x66696E63_68000003


@contextlib.contextmanager
def trainer_lease(settings: Settings) -> Iterator[Callable[[], bool]]:
    """Yields ``take``: takes the lease if it is free and says whether this process holds it. The
    lease is held until the block ends (or the process dies)."""
    if settings.database_url:
        import psycopg

        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            held = False

            def take_advisory() -> bool:
                nonlocal held
                held = held or bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (_TRAINER_LOCK,)).fetchone()[0])
                return held

            yield take_advisory  # closing the connection releases the lock
        return
    ensure_private_dir(settings.home / "models")
    with (settings.home / "models" / "trainer.lock").open("a") as lock:

        def take_file() -> bool:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        yield take_file
