"""The trainer runs beside the request path and never slows it."""

import asyncio
import os
import subprocess
import sys
import threading
import time

import httpx

from finch.conversation import Conversation
from finch.learning.trainer import ClaudeAnswer
from finch.server.pressure import Pressure
from tests.conftest import QA, TEST_KEY


def test_a_request_during_a_slow_training_step_is_not_delayed(start_finch, teacher):
    finch = start_finch(teacher.url)
    loop = finch.app.state.proxy.learning
    entered, release = threading.Event(), threading.Event()
    real = loop.ensemble.learn_from_claude

    def slow_learn(*args, **kwargs):
        entered.set()
        release.wait(10)  # a training step that takes as long as we like
        return real(*args, **kwargs)

    loop.ensemble.learn_from_claude = slow_learn
    try:
        first = httpx.post(
            finch.url + "/v1/messages",
            headers={"x-api-key": TEST_KEY},
            json={"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": QA[0][0]}]},
        )
        assert first.status_code == 200
        assert entered.wait(5), "the trainer never started on the first answer"
        started = time.perf_counter()
        second = httpx.post(
            finch.url + "/v1/messages",
            headers={"x-api-key": TEST_KEY},
            json={"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": QA[1][0]}]},
        )
        elapsed = time.perf_counter() - started
        assert second.status_code == 200 and second.json()["content"][0]["text"] == QA[1][1]
        assert elapsed < 2.0, f"a request waited {elapsed:.1f}s behind training"
        assert loop.trainer.backlog == 1 or loop.trainer.processed == 0
    finally:
        release.set()
    assert loop.trainer.drain(60)
    assert loop.trainer.processed == 2


def test_a_trainer_that_falls_behind_drops_the_oldest_events(start_finch, teacher):
    finch = start_finch(teacher.url)
    trainer = finch.app.state.proxy.learning.trainer
    release = threading.Event()
    real = trainer.ensemble.learn_from_claude
    trainer.ensemble.learn_from_claude = lambda *a, **k: (release.wait(10), real(*a, **k))[1]
    try:
        conversation = Conversation("", (("user", "q"),))
        for i in range(trainer._capacity + 40):
            trainer.submit(ClaudeAnswer(f"r{i}", conversation, "a"))
        assert trainer.dropped >= 39  # one may already be in progress
        assert trainer.backlog == trainer._capacity
    finally:
        release.set()


def test_the_trainer_steps_aside_while_requests_need_the_cpu(start_finch, teacher):
    finch = start_finch(teacher.url)
    trainer = finch.app.state.proxy.learning.trainer
    busy = threading.Event()
    busy.set()
    trainer.quiet, trainer.max_pause_s = (lambda: not busy.is_set()), 30.0
    conversation = Conversation("", (("user", "q"),))
    before = trainer.processed
    trainer.submit(ClaudeAnswer("r-busy", conversation, "a"))
    time.sleep(0.5)
    assert trainer.processed == before and trainer.backlog == 1  # waiting, not learning
    busy.clear()
    assert trainer.drain(60) and trainer.processed == before + 1


def test_loop_lag_sees_a_starved_event_loop():
    async def scenario():
        lag = Pressure(interval_s=0.01, min_idle=0.0)  # the loop alone: whatever else the machine runs
        lag.in_flight = 1
        watcher = asyncio.create_task(lag.watch())
        await asyncio.sleep(0.1)
        idle = lag.busy()
        for _ in range(10):  # callbacks that hold the loop, as a CPU-starved server's do
            time.sleep(0.02)
            await asyncio.sleep(0)
        starved = lag.busy()
        assert not lag.busy(others=1)  # late, but no other request is waiting
        assert not lag.quiet()
        lag.in_flight = 0
        assert lag.quiet()  # late, but nothing is waiting: background work may run
        lag.in_flight = 1
        await asyncio.sleep(0.05)  # a few on-time ticks: quiet again, long before the average forgets
        quiet_soon = lag.quiet()
        await asyncio.sleep(0.5)
        recovered = lag.busy()
        watcher.cancel()
        return idle, starved, quiet_soon, recovered

    assert asyncio.run(scenario()) == (False, True, True, False)


def test_background_work_waits_for_idle_cpu_while_a_request_is_in_flight():
    lag = Pressure()  # its loop ticks on time until watched
    lag.in_flight = 1
    assert lag.quiet()
    lag.idle_share = 0.1
    assert not lag.quiet()  # the loop is on time, but the machine has no CPU to spare
    lag.in_flight = 0
    assert lag.quiet()  # nothing of finch's is waiting: the machine's load is not its concern


def test_loop_lag_measures_the_machines_idle_cpu():
    """Other processes busy on every core leave the machine no idle CPU, and the watcher sees it."""
    burn = "import os, time\nos.nice(10)\nend = time.time() + 2.0\nwhile time.time() < end: pass"

    async def scenario():
        lag = Pressure(interval_s=0.01)
        lag.in_flight = 1
        watcher = asyncio.create_task(lag.watch())
        burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(os.cpu_count() or 1)]
        await asyncio.sleep(1.2)
        crowded, idle = lag.quiet(), lag.idle_share
        for burner in burners:
            burner.wait()
        watcher.cancel()
        return crowded, idle

    crowded, idle = asyncio.run(scenario())
    assert idle < 0.2 and not crowded
