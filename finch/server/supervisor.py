"""The trainer's supervisor: runs ``finch train`` as a child of the server, restarts it when it
dies, and stops it with the server.

The child gets the server's settings through its environment (``FINCH_<NAME>``), never the API
key or the client token: the trainer reads the log and writes models, and talks to nobody. A child
that keeps dying is restarted less and less often (from half a second up to half a minute); one
that ran for a minute starts again at once.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from finch.config import TRAINER_SETTINGS_ENV, Settings

log = logging.getLogger(__name__)

_SECRET_ENV = ("FINCH_API_KEY", "ANTHROPIC_API_KEY", "FINCH_CLIENT_TOKEN", "FINCH_ADMIN_TOKEN")


class TrainerProcess:
    def __init__(
        self, settings: Settings, first_delay_s: float = 0.5, max_delay_s: float = 30.0, healthy_s: float = 60.0
    ) -> None:
        self.settings = settings
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.healthy_s = healthy_s  # a child that lived this long was not crash-looping
        self.restarts = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._spawning = threading.Lock()  # a child is started, or the supervisor is stopped: not both at once
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._supervise, name="finch-trainer-supervisor", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the trainer to save and exit (SIGTERM); kill it if it has not within ``timeout``."""
        with self._spawning:  # no child starts after this
            self._stopping.set()
            child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the trainer did not stop within %.0f s: killed", timeout)
                child.kill()
                child.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _supervise(self) -> None:
        delay = self.first_delay_s
        while True:
            with self._spawning:
                if self._stopping.is_set():
                    return
                started = time.monotonic()
                child = subprocess.Popen(self._command(), env=self._environment(), stdin=subprocess.DEVNULL)
                self._child = child
            code = child.wait()
            if self._stopping.is_set():
                return
            self.restarts += 1
            if time.monotonic() - started > self.healthy_s:
                delay = self.first_delay_s
            log.warning("the trainer exited with %s; restarting it in %.1f s", code, delay)
            self._stopping.wait(delay)
            delay = min(delay * 2, self.max_delay_s)

    def _command(self) -> list[str]:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        level = level if level in ("debug", "info", "warning", "error") else "warning"
        parent = str(os.getpid())
        return [
            sys.executable,
            "-m",
            "finch",
            "train",
            "--home",
            str(self.settings.home),
            "--parent",
            parent,
            "--log-level",
            level,
        ]

    def _environment(self) -> dict[str, str]:
        """The server's environment less its secrets, and its settings, whole (``Settings.to_json``)."""
        env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
        env[TRAINER_SETTINGS_ENV] = self.settings.to_json()
        return env
