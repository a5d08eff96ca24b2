"""Kill finch with SIGKILL at random moments, under load, while it learns and checkpoints: every
restart finds loadable models, an intact database and every row that had been committed."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from finch.models.learners import load_learner
from finch.models.tokenizer import FinchTokenizer
from finch.server.runner import free_port
from tests.conftest import QA

ROUNDS = int(os.environ.get("FINCH_CRASH_ROUNDS", "50"))


def start_finch(home, upstream_url, port):
    env = {
        **os.environ,
        "FINCH_HOME": str(home),
        "FINCH_PRESET": "tiny",
        "FINCH_COLD_START": "5",
        "FINCH_SAVE_EVERY": "2",
        "FINCH_API_KEY": "fake-crash-key",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "finch", "serve", "--port", str(port), "--upstream-url", upstream_url,
         "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("finch did not start after a kill")


def load(url, stop):
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            question = QA[i % len(QA)][0]
            body = {
                "model": "claude-haiku-4-5",
                "max_tokens": 60,
                "messages": [{"role": "user", "content": question}],
                "stream": i % 2 == 0,
            }
            with contextlib.suppress(httpx.HTTPError):  # the server is being killed
                client.post("/v1/messages", json=body)
            i += 1
            # A client that reads each answer before asking again. Back-to-back requests keep one
            # always in flight, and the trainer, which steps aside for requests, could then go a
            # whole round without learning the two examples that a checkpoint needs.
            time.sleep(0.02)


def committed_rows(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.timeout(900)  # 50 restarts, each loading torch and the models: minutes on two cores
@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_committed(teacher, home):
    rng = random.Random(11)
    port = free_port()
    db = home / "finch.db"
    kills_with_checkpoints = 0
    for _ in range(ROUNDS):
        proc = start_finch(home, teacher.url, port)
        stop = threading.Event()
        client = threading.Thread(target=load, args=(f"http://127.0.0.1:{port}", stop))
        client.start()
        time.sleep(rng.uniform(0.5, 3.0))  # under load, with the trainer learning and saving every 2 events
        before = committed_rows(db)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        client.join()

        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        assert committed_rows(db) >= before
        tokenizer = FinchTokenizer.load(home / "tokenizer.json")
        for kind in ("router", "validator", "generator"):
            if (home / "models" / kind).exists():
                learner = load_learner(home / "models" / kind, kind, tokenizer)
                kills_with_checkpoints += learner is not None
    assert committed_rows(db) > ROUNDS  # the load really ran
    assert kills_with_checkpoints > 0  # and the kills really hit a finch that checkpoints
