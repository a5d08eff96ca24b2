"""The trainer is a process of its own: serving never waits for it, a dead one is restarted and
resumes where it left off, and it holds no secret."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import torch

from finch.config import Settings
from finch.server.pressure import Pressure
from finch.store.db import read_rows
from tests.conftest import QA, TEST_KEY


def ask(finch, question, token=None):
    response = httpx.post(
        finch.url + "/v1/messages",
        headers={"x-api-key": TEST_KEY} | ({"x-finch-token": token} if token else {}),
        json={"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": question}]},
        timeout=30,
    )
    assert response.status_code == 200
    return response


def trainer_pid(loop, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if loop.trainer.pid is not None and loop.serving is not None:
            return loop.trainer.pid
        time.sleep(0.02)
    pytest.fail("the trainer never started and published")


def test_requests_are_served_while_the_trainer_is_frozen(start_finch, teacher):
    """A trainer stopped in the middle of anything (SIGSTOP: a step that takes as long as we like)
    delays no request; what was asked meanwhile is learned once it runs again."""
    finch = start_finch(teacher.url, start_trainer=True)
    loop = finch.app.state.proxy.learning
    pid = trainer_pid(loop)
    os.kill(pid, signal.SIGSTOP)
    try:
        for question, answer in QA[:3]:
            started = time.perf_counter()
            assert ask(finch, question).json()["content"][0]["text"] == answer
            assert time.perf_counter() - started < 2.0
        finch.app.state.proxy.store.flush()
        assert loop.status()["trainer_backlog"] >= 3  # written, not yet read
        assert not loop.drain(timeout=0.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert loop.drain(60)
    status = loop.status()
    assert status["learned"] == 3 and status["trainer_backlog"] == 0


def test_a_killed_trainer_is_restarted_and_resumes_from_its_checkpoint_counting_each_event_once(
    start_finch, teacher, home
):
    """Killed, the trainer is restarted; it goes back to its last checkpoint (here the first: no
    other is due), learns again what came after, once, and serving never waited."""
    finch = start_finch(teacher.url, save_every=100, start_trainer=True)
    loop = finch.app.state.proxy.learning
    pid = trainer_pid(loop)
    for question, _ in QA[:2]:
        ask(finch, question)
    assert loop.drain(60)
    generation = loop.serving.generation
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while loop.trainer.pid in (None, pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert loop.trainer.pid not in (None, pid) and loop.trainer.restarts == 1
    last = ask(finch, QA[2][0]).headers["x-finch-request-id"]  # served meanwhile, from the last snapshot
    assert loop.drain(60)
    assert loop.serving.generation > generation  # generations go on from the last one
    db = home / "finch.db"
    deadline = time.monotonic() + 30  # the trainer's log rows are written off its learning thread
    while not read_rows(db, "SELECT 1 FROM learning WHERE request_id = ?", (last,)) and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = read_rows(db, "SELECT request_id FROM learning")
    assert len(rows) == len({row["request_id"] for row in rows}) == 3  # the two learned again, once each
    assert loop.store.learning_summary()["learned"] == loop.status()["learned"] == 3  # nothing lost, none twice


def test_the_request_path_runs_its_models_on_one_thread(finch):
    """With two, a decision after an idle moment waits for the second thread to wake at every
    product (BENCHMARKS.md, "Decisions and the trainer")."""
    loop = finch.app.state.proxy.learning
    assert loop._local_thread.submit(torch.get_num_threads).result() == 1


def test_the_trainer_runs_at_the_lowest_priority_holds_no_key_and_stops_with_its_server(start_finch, teacher, home):
    finch = start_finch(teacher.url, api_key="fake-server-key-93d1", client_token="fake-token-77ab", start_trainer=True)
    loop = finch.app.state.proxy.learning
    pid = trainer_pid(loop)
    assert os.getpriority(os.PRIO_PROCESS, pid) == 19
    assert os.sched_getscheduler(pid) == os.SCHED_IDLE  # below nice 19: requests preempt it at once
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"fake-server-key-93d1" not in environ and b"fake-token-77ab" not in environ
    handed = environ.split(b"FINCH_TRAINER_SETTINGS=")[1].split(b"\0")[0]  # the server's settings, whole
    assert Settings.from_json(handed.decode()) == replace(loop.settings, api_key=None, client_token=None)

    ask(finch, QA[0][0], token="fake-token-77ab")
    assert loop.drain(60)
    finch.server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert list((home / "models" / "router").glob("ckpt-*"))  # saved on the way out


def test_a_trainer_run_on_its_own_teaches_a_server_that_starts_none(start_finch, teacher, home):
    finch = start_finch(teacher.url)  # start_trainer = false
    loop = finch.app.state.proxy.learning
    ask(finch, QA[0][0])
    assert loop.trainer.pid is None and not loop.drain(timeout=1.0)  # nothing learns yet
    trainer = subprocess.Popen(
        [sys.executable, "-m", "finch", "train", "--home", str(home)],
        env={**os.environ, "FINCH_PRESET": "tiny"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert loop.drain(60)
        assert loop.status()["learned"] == 1
    finally:
        trainer.terminate()
        assert trainer.wait(30) == 0  # SIGTERM: it saves, publishes and exits cleanly


def test_loop_lag_sees_a_starved_event_loop():
    async def scenario():
        lag = Pressure(interval_s=0.01)
        lag.in_flight = 1
        watcher = asyncio.create_task(lag.watch())
        await asyncio.sleep(0.1)
        idle = lag.busy()
        for _ in range(10):  # callbacks that hold the loop, as a CPU-starved server's do
            time.sleep(0.02)
            await asyncio.sleep(0)
        starved = lag.busy()
        assert not lag.busy(others=1)  # late, but no other request is waiting
        await asyncio.sleep(0.5)
        recovered = lag.busy()
        watcher.cancel()
        return idle, starved, recovered

    assert asyncio.run(scenario()) == (False, True, False)
