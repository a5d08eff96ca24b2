"""Kill finch with SIGKILL at random moments, under load, while it learns and checkpoints: every
restart finds loadable models, an intact database and every row that had been committed. Kill its
trainer again and again: no request notices, and learning never goes back."""

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

from finch.learning import snapshot, status
from finch.models.learners import load_learner
from finch.models.tokenizer import FinchTokenizer
from finch.server.runner import free_port
from tests.conftest import QA

ROUNDS = int(os.environ.get("FINCH_CRASH_ROUNDS", "30"))


def start_finch(home, upstream_url, port):
    env = {
        **os.environ,
        "FINCH_HOME": str(home),
        "FINCH_PRESET": "tiny",
        "FINCH_COLD_START": "5",
        "FINCH_SAVE_EVERY": "2",
        "FINCH_API_KEY": "fake-crash-key",
        # Kills must land while the trainer learns. At its default nice 19, beside this test's load
        # in one session, it gets about 1.5% of a core and may learn nothing between two kills.
        "FINCH_TRAINER_NICE": "0",
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


def published_generation(home):
    served = snapshot.read(home / "models" / status.FILE)
    return served["generation"] if served else 0


def wait_for_the_trainer(port, before, learned_before, timeout=120):
    """Until this run's trainer has started (it loads torch and the models), learned what the last
    run left, published, and learned something more under load: the snapshot the server started
    from is the last run's, and a trainer's first lesson waits for the judge's model to load."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        learning = httpx.get(f"http://127.0.0.1:{port}/finch/stats", timeout=5).json()["learning"]
        if (learning["snapshot_generation"] or 0) > before and learning["learned"] > learned_before:
            return
        time.sleep(0.1)
    pytest.fail("the trainer did not publish what it learned")


def published_learned(home):
    published = status.read_published(home)
    return published["status"]["learned"] if published else 0


def committed_rows(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.timeout(900)  # 30 restarts, each loading torch and the models: minutes on two cores
@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_committed(teacher, home):
    rng = random.Random(11)
    port = free_port()
    db = home / "finch.db"
    kills_with_checkpoints = 0
    for _ in range(ROUNDS):
        generation, learned = published_generation(home), published_learned(home)
        proc = start_finch(home, teacher.url, port)
        stop = threading.Event()
        client = threading.Thread(target=load, args=(f"http://127.0.0.1:{port}", stop))
        client.start()
        wait_for_the_trainer(port, generation, learned)  # then kill at a random moment of its learning
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


KILLS = int(os.environ.get("FINCH_TRAINER_KILLS", "20"))


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_sigkill_of_the_trainer_under_load_costs_no_request_and_no_progress(start_finch, teacher):
    """The trainer killed again and again while clients keep asking: every request is answered,
    each restart goes on from the last checkpoint, and what is served never goes back."""
    finch = start_finch(teacher.url, cold_start=5, save_every=2, start_trainer=True)
    loop = finch.app.state.proxy.learning
    loop.trainer.healthy_s = 0.0  # these kills are the test's, not a crash loop: restart at once
    rng = random.Random(5)
    stop, statuses, served = threading.Event(), [], []

    def client(offset):
        with httpx.Client(base_url=finch.url, timeout=30) as c:
            i = offset
            while not stop.is_set():
                body = {"model": "m", "max_tokens": 60, "messages": [{"role": "user", "content": QA[i % len(QA)][0]}]}
                statuses.append(c.post("/v1/messages", json=body, headers={"x-api-key": "fake-kill-key"}).status_code)
                i += 1
                time.sleep(0.3)  # a user's pace: load that leaves the trainer CPU to learn with

    def watch():  # what the server serves from, as it changes
        while not stop.is_set():
            serving = loop.serving
            if serving is not None and (not served or served[-1][0] != serving.generation):
                served.append((serving.generation, serving.position.get("requests", 0)))
            time.sleep(0.005)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)] + [threading.Thread(target=watch)]
    for t in threads:
        t.start()
    try:
        killed = None
        for kill in range(KILLS):
            deadline = time.monotonic() + 60
            while loop.trainer.pid in (None, killed) and time.monotonic() < deadline:
                time.sleep(0.01)
            pid = loop.trainer.pid
            assert pid not in (None, killed), f"no new trainer after {kill} kills"
            time.sleep(rng.uniform(0.0, 5.0))  # starting, learning, checkpointing or publishing
            os.kill(pid, signal.SIGKILL)
            killed = pid
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert loop.drain(120)
    assert loop.trainer.restarts == KILLS
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests: {sorted(set(statuses))}"
    generations = [g for g, _ in served]
    positions = [p for _, p in served]
    assert generations == sorted(generations) and positions == sorted(positions)
    assert loop.status()["learned"] >= 5 and loop.status()["trainer_backlog"] == 0
