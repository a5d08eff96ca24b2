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
