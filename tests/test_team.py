"""The team tier: several replicas of finch on one PostgreSQL log and one shared home, and one trainer.

Two real servers (replicas A and B), each starting its own trainer process as `finch serve` does;
the lease lets one learn and keeps the other waiting. Clients are the anthropic SDK; the upstream is
the teacher simulator. In CI a missing PostgreSQL fails these tests (``database_url``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from finch.config import load_settings
from finch.learning.lease import leases
from tests.test_learning_e2e import TRAIN, Finch, train_until_local

pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(teacher_server, database_url, tmp_path):
    home = tmp_path / "shared-home"
    # One namespace (isolation "none"): what is measured here is replicas, not principals.
    a = Finch(home, teacher_server[1], database_url=database_url, isolation="none")
    b = Finch(home, teacher_server[1], database_url=database_url, isolation="none")
    yield a, b
    for replica in (a, b):
        replica.server.stop()


@pytest.fixture
def teacher_server():
    from finch.server.runner import ServerThread
    from finch.teacher.corpus import Corpus
    from finch.teacher.server import Teacher, build_teacher_app

    teacher = Teacher(Corpus(TRAIN))
    server = ServerThread(build_teacher_app(teacher)).start()
    yield teacher, server.url
    server.stop()


def test_what_one_replica_learns_the_other_serves_and_a_mark_on_one_stops_both(replicas, teacher_server):
    a, b = replicas
    trainers = {a.loop.trainer.pid, b.loop.trainer.pid}
    assert len(trainers) == 2  # each replica started one; the lease lets one learn
    train_until_local(lambda question: a.ask(question)[0], [q for q, _ in TRAIN])
    assert b.loop.drain(60)  # the same snapshot generation reaches B
    assert b.loop.serving.generation == a.loop.serving.generation
    teacher = teacher_server[0]
    before = teacher.requests
    for question, answer in TRAIN:
        source, message = b.ask(question)  # learned through A, answered by B
        assert source == "local" and message.content[0].text == answer
    assert teacher.requests == before

    question = TRAIN[3][0]
    raw = a.sdk.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": question}]
    )
    assert raw.headers["x-finch-source"] == "local"
    for pid in trainers:  # no new weights from here on: the mark must travel by itself
        os.kill(pid, signal.SIGSTOP)
    marked = time.monotonic()
    verdict = httpx.post(
        a.url + "/finch/feedback", json={"request_id": raw.headers["x-finch-request-id"], "good": False}
    )
    assert verdict.status_code == 200 and verdict.json()["learned"] is True
    while b.loop.decide_now(_ask(question), 100).route == "local":  # B hears of the mark, not of new weights
        assert time.monotonic() - marked < 1.0, "B still serves an answer marked bad on A"
        time.sleep(0.01)
    for pid in trainers:
        os.kill(pid, signal.SIGCONT)
    assert b.ask(question)[0] == "upstream"


def test_one_trainer_holds_the_lease_and_a_killed_ones_passes_on(database_url, tmp_path):
    settings = load_settings({"home": str(tmp_path), "database_url": database_url}, {})
    with leases(settings) as first, leases(settings) as second:
        assert first.take("team-a") and not second.take("team-a")  # one at a time
        assert first.take("team-a")  # taking it again is holding it
        assert second.take("team-b")  # and namespace by namespace
    holder = subprocess.Popen(  # another process takes it, says so, and is then killed
        [sys.executable, "-c", HOLD_THE_LEASE, str(tmp_path), database_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with leases(settings) as mine:
            assert not mine.take("team-a")
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            deadline = time.monotonic() + 5
            while not mine.take("team-a"):  # the database sees the holder's connection go, and frees the lease
                assert time.monotonic() < deadline, "a killed trainer's lease never passed on"
                time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait(10)


HOLD_THE_LEASE = """
import sys, time
from finch.config import load_settings
from finch.learning.lease import leases
settings = load_settings({"home": sys.argv[1], "database_url": sys.argv[2]}, {})
with leases(settings) as held:
    assert held.take("team-a")
    print("held", flush=True)
    time.sleep(60)
"""


def _ask(question: str):
    from finch.conversation import Conversation

    return Conversation("", (("user", question),))


@pytest.fixture
def own_postgres():
    """A PostgreSQL cluster of this test's own, to stop and start (``.ci/postgres``)."""
    import socket
    import tempfile

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "FINCH_PG_DIR": tempfile.mktemp(prefix="finch-pg-", dir="/tmp"), "FINCH_PG_PORT": str(port)}
    script = str(Path(__file__).parent.parent / ".ci" / "postgres")

    def run(command: str) -> str:
        return subprocess.run([script, command], env=env, check=True, capture_output=True, text=True).stdout

    url = run("start").strip().split("=", 1)[1]
    try:
        yield url, run
    finally:
        run("destroy")


def test_while_postgresql_is_down_everything_is_forwarded_and_local_answers_resume_after(
    own_postgres, teacher_server, tmp_path
):
    url, postgres = own_postgres
    finch = Finch(tmp_path / "home", teacher_server[1], database_url=url, isolation="none")
    try:
        train_until_local(lambda question: finch.ask(question)[0], [q for q, _ in TRAIN])
        logged_before = finch.app.state.proxy.store.totals()["requests"]
        postgres("stop")
        time.sleep(0.5)  # the replica sees its listening connection closed within a tenth of a second
        teacher = teacher_server[0]
        before = teacher.requests
        routes = [_route(finch, question) for question, _ in TRAIN for _ in range(2)]
        assert routes == ["upstream"] * len(routes) and teacher.requests == before + len(routes)
        postgres("start")
        deadline, sent = time.monotonic() + 60, len(routes)
        while _route(finch, TRAIN[0][0]) != "local":  # queued rows written, the log counts again
            sent += 1
            assert time.monotonic() < deadline, "local answers never resumed after PostgreSQL came back"
            time.sleep(0.5)
        assert finch.loop.drain(120)
        assert finch.app.state.proxy.store.totals()["requests"] == logged_before + sent + 1  # none lost
    finally:
        finch.server.stop()


def _route(finch: Finch, question: str) -> str:
    raw = finch.sdk.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": question}]
    )
    return raw.headers["x-finch-source"]


def _serve(home, upstream_url: str, database_url: str) -> tuple[subprocess.Popen, str]:
    """A replica as `finch serve` runs it: its own process, and its own trainer process."""
    from finch.server.runner import free_port

    port = free_port()
    env = {
        **os.environ,
        "FINCH_HOME": str(home),
        "FINCH_DATABASE_URL": database_url,
        "FINCH_ISOLATION": "none",
        "FINCH_PRESET": "tiny",
        "FINCH_COLD_START": "5",
        # Checkpoints rarer than the kills below: a trainer that takes over learns again what its
        # killed predecessor learned past the last one, so the test sees whether that counts twice.
        "FINCH_SAVE_EVERY": "200",
        "FINCH_API_KEY": "fake-team-key",
        "FINCH_TRAINER_NICE": "0",  # kills must land while the trainer learns, beside this test's load
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "finch", "serve", "--port", str(port), "--upstream-url", upstream_url,
         "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("a replica did not start")


def _learning(url: str) -> dict:
    return httpx.get(url + "/finch/stats", timeout=10).json()["learning"]


@pytest.mark.timeout(600)
def test_a_replica_and_a_trainer_killed_mid_stream_lose_no_committed_row_and_learn_nothing_twice(
    teacher, database_url, tmp_path
):
    import threading

    import psycopg

    from tests.conftest import QA

    home = tmp_path / "shared-home"
    (a, a_url), (b, b_url) = (_serve(home, teacher.url, database_url) for _ in range(2))
    acknowledged: list[tuple[str, str, float]] = []  # (request id, replica, when its answer came)
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not stop.is_set():
                url = (a_url, b_url)[i % 2]
                body = {"model": "claude-haiku-4-5", "max_tokens": 60, "messages": [
                    {"role": "user", "content": QA[i % len(QA)][0]}]}  # fmt: skip
                try:
                    answer = client.post(url + "/v1/messages", json=body)
                    acknowledged.append((answer.headers["x-finch-request-id"], url, time.monotonic()))
                except httpx.HTTPError:
                    pass  # replica B is being killed
                i += 1
                time.sleep(0.02)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        deadline = time.monotonic() + 180
        while _learning(a_url)["learned"] < 10:  # a trainer has started and learns
            assert time.monotonic() < deadline, "no trainer learned"
            time.sleep(0.2)
        b.send_signal(signal.SIGKILL)  # replica B, and with it its trainer
        b_killed = time.monotonic()
        b.wait(10)
        os.kill(_learning(a_url)["trainer_pid"], signal.SIGKILL)  # and A's trainer
        learned_at_kill = _learning(a_url)["learned"]
        time.sleep(3)
    finally:
        stop.set()
        sender.join(30)
    try:
        deadline = time.monotonic() + 240
        while True:  # a trainer took over, learned on, and caught up with the log
            learning = _learning(a_url)
            if learning["learned"] > learned_at_kill and learning["trainer_backlog"] == 0:
                break
            assert time.monotonic() < deadline, f"no trainer took over: {learning}"
            time.sleep(0.2)
        assert learning["trainer_restarts"] >= 1
        with psycopg.connect(database_url) as db:
            db.execute("SELECT set_config('finch.namespace', '*', false)")
            logged = {row[0] for row in db.execute("SELECT id FROM requests")}
            twice = db.execute(
                "SELECT request_id, kind, COUNT(*) FROM learning GROUP BY request_id, kind HAVING COUNT(*) > 1"
            ).fetchall()
            unlearned = db.execute(
                "SELECT COUNT(*) FROM examples e WHERE NOT EXISTS"
                " (SELECT 1 FROM learning l WHERE l.request_id = e.request_id AND l.kind = 'claude')"
            ).fetchone()[0]
    finally:
        a.send_signal(signal.SIGTERM)
        a.wait(30)
    # Every row committed is there; a replica killed loses at most what its writer had not yet
    # committed (it commits every 50 ms): here, what B answered in its last 200 ms.
    settled = [rid for rid, url, at in acknowledged if url == a_url or at < b_killed - 0.2]
    assert len(settled) > 50 and [rid for rid in settled if rid not in logged] == []
    assert twice == []  # the trainer that took over learned on from the checkpoint, and its predecessor's rows went
    assert unlearned == 0  # and learned every answer of Claude's once
