"""The storage seam's conformance suite: what any backend of ``finch.store.log.Log`` must do. Each test
runs against every backend in ``BACKENDS``; a second backend is one more entry (and its module)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from finch.conversation import Conversation
from finch.policy.decide import Attempt, Candidate
from finch.store.log import STREAMS, Log
from finch.store.postgres import PostgresLog
from finch.store.rows import feedback_row, forget_learning_after, learning_row
from finch.store.sqlite import SqliteLog
from finch.store.writer import RequestRecord

# Each backend, opened on a fresh place: SQLite on a file in a temporary directory, PostgreSQL on a new
# database (the ``database_url`` fixture: in CI a missing server fails these tests, it never skips them).
BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Log]] = {
    "sqlite": lambda request, tmp: SqliteLog(tmp / "finch.db"),
    "postgres": lambda request, tmp: PostgresLog(request.getfixturevalue("database_url")),
}
NEEDS = {"postgres": "database_url"}  # set up before the log, so that it is torn down after it
CLAUDE = b'{"type":"message","role":"assistant","content":[{"type":"text","text":"Paris."}],"usage":{}}'


@pytest.fixture(params=sorted(BACKENDS))
def open_log(request, tmp_path) -> Iterator[Callable[[], Log]]:
    opened: list[Log] = []
    if request.param in NEEDS:
        request.getfixturevalue(NEEDS[request.param])

    def make() -> Log:
        log = BACKENDS[request.param](request, tmp_path)
        log.start()
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


def ask(text: str) -> Conversation:
    return Conversation("", (("user", text),))


def forwarded(request_id: str, question: str = "capital of France?", max_tokens: int = 64, **fields) -> RequestRecord:
    return RequestRecord(
        request_id, time.time(), "POST", "/v1/messages", "forward", fields.pop("reason", "uncertified"),
        fields.pop("status", 200), model="claude-haiku-4-5", chunks=[CLAUDE], conversation=ask(question),
        max_tokens=max_tokens, **fields,
    )  # fmt: skip


def served(request_id: str, answer: str = "Paris.", **fields) -> RequestRecord:
    attempt = Attempt((Candidate(answer, "recalled", 0.99),), 0.9, chosen=0, audit_chance=0.05)
    return RequestRecord(
        request_id, time.time(), "POST", "/v1/messages", "local", "local", 200, model="claude-haiku-4-5",
        conversation=ask("capital of France?"), attempt=attempt, local_answer=answer, local_usage=(5, 2), **fields,
    )  # fmt: skip


def test_rows_are_read_back_in_the_order_written_from_any_cursor(open_log):
    log = open_log()
    for i in range(5):
        log.submit(forwarded(f"r{i}", f"question {i}", max_tokens=10 + i))
    log.flush()
    rows, reached = log.events("requests", 0, 100)
    assert [r["request_id"] for r in rows] == [f"r{i}" for i in range(5)]
    assert [r["max_tokens"] for r in rows] == [10, 11, 12, 13, 14]
    assert Conversation.from_json(rows[2]["conversation"]) == ask("question 2") and rows[2]["answer"] == "Paris."
    assert reached == rows[-1]["seq"] and [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    later, _ = log.events("requests", rows[1]["seq"], 2)  # from a cursor, at most a limit
    assert [r["request_id"] for r in later] == ["r2", "r3"]
    assert log.end()["requests"] == reached and log.backlog({"requests": rows[1]["seq"]}) == 3


def test_the_cursor_moves_past_rows_with_nothing_to_learn(open_log):
    log = open_log()
    log.submit(forwarded("r0"))
    log.submit(forwarded("error", status=529))  # an upstream failure: nothing to learn
    log.submit(RequestRecord("count", time.time(), "POST", "/v1/messages/count_tokens", "forward", "passthrough", 200))
    log.flush()
    rows, reached = log.events("requests", 0, 100)
    assert [r["request_id"] for r in rows] == ["r0"]
    assert reached == log.end()["requests"] > rows[0]["seq"]  # the rest are read past, not learned
    assert log.events("requests", reached, 100) == ([], reached)


def test_a_served_answer_is_an_event_with_its_attempt_and_a_verdict_on_it_is_a_feedback_event(open_log):
    log = open_log()
    log.submit(served("local1"))
    log.flush()
    log.submit(feedback_row("local1", False))
    log.flush()
    (row,), _ = log.events("requests", 0, 10)
    assert (row["route"], row["reason"]) == ("local", "local")
    attempt = Attempt.from_json(json.loads(row["decision"]))
    assert attempt.choice == Candidate("Paris.", "recalled", 0.99) and attempt.audit_chance == 0.05
    (verdict,), _ = log.events("feedback", 0, 10)
    assert (verdict["request_id"], verdict["good"], verdict["answer"]) == ("local1", 0, "Paris.")
    assert log.stored_local_answer("local1") == (ask("capital of France?"), "Paris.")
    assert log.request_is_logged("local1") and not log.request_is_logged("nope")


def test_a_reader_waits_for_rows_and_no_longer(open_log):
    log, stop = open_log(), threading.Event()
    started = time.monotonic()
    log.wait(stop, 0.3)  # nothing written: it waits out its time
    assert time.monotonic() - started >= 0.25
    threading.Timer(0.1, lambda: log.submit(forwarded("r0"))).start()
    started = time.monotonic()
    log.wait(stop, 5.0)
    assert time.monotonic() - started < 2.0  # woken by the write, not the timeout
    stop.set()
    started = time.monotonic()
    log.wait(stop, 5.0)
    assert time.monotonic() - started < 0.5


def test_learning_rows_after_a_checkpoint_are_taken_back(open_log):
    log = open_log()
    for seq in (1, 2, 3):
        log.submit(learning_row(ts=time.time(), request_id=f"r{seq}", kind="claude", good=1, seq=seq))
    log.submit(learning_row(ts=time.time(), request_id="r3", kind="claude", audit=1, audit_good=0, seq=4))
    log.flush()
    assert log.learning_summary()["learned"] == 4 and log.learning_summary()["audits_bad"] == 1
    log.submit(forget_learning_after({"requests": 2, "feedback": 0}))
    log.flush()
    assert log.learning_summary()["learned"] == 2 and log.learning_summary()["audits"] == 0


def test_what_people_read_adds_up(open_log):
    log = open_log()
    for i in range(3):
        log.submit(forwarded(f"f{i}"))
    log.submit(served("l0"))
    log.flush()
    totals = log.totals()
    assert (totals["requests"], totals["forwarded"], totals["local"]) == (4, 3, 1)
    assert {(r["route"], r["reason"]): r["requests"] for r in log.by_reason()} == {
        ("forward", "uncertified"): 3,
        ("local", "local"): 1,
    }
    (today,) = log.by_day()
    assert today["requests"] == 4 and log.example_count() == 4  # conversations kept with their answer
    assert "capital of France?" in list(log.recent_texts())
    board = log.dashboard()
    assert sum(point["requests"] for point in board["messages"]) == 4 and len(board["recent"]) == 4


def test_forget_deletes_conversations_and_keeps_the_numbers(open_log):
    log = open_log()
    log.submit(forwarded("f0"))
    log.submit(served("l0"))
    log.flush()
    assert log.forget() == 3  # two conversations kept with their answers, and one local answer
    assert log.stored_local_answer("l0") is None and log.example_count() == 0
    assert log.totals()["requests"] == 2


def test_what_was_committed_survives_a_reopen(open_log):
    log = open_log()
    log.submit(forwarded("r0"))
    log.flush()
    log.close()
    again = open_log()
    rows, _ = again.events("requests", 0, 10)
    assert [r["request_id"] for r in rows] == ["r0"] and set(again.end()) == set(STREAMS)


def test_a_reader_following_several_writers_reads_every_row_once(open_log):
    """Replicas write the same log at once. A trainer that follows it from a cursor must never step
    over a row that commits after a later one (PostgreSQL: the writers' lock; SQLite: its own)."""
    writers, reader, stop = [open_log() for _ in range(3)], open_log(), threading.Event()
    per_writer = 60

    def write(index: int, log: Log) -> None:
        for i in range(per_writer):
            log.submit(forwarded(f"w{index}-{i}", f"question {index} {i}"))
            if i % 7 == 0:
                time.sleep(0.002)  # batches of every size, interleaved
        log.flush()

    threads = [threading.Thread(target=write, args=(i, log)) for i, log in enumerate(writers)]
    for thread in threads:
        thread.start()
    seen, cursor, deadline = [], 0, time.monotonic() + 30
    while len(seen) < per_writer * len(writers) and time.monotonic() < deadline:
        rows, cursor = reader.events("requests", cursor, 17)
        seen += [row["request_id"] for row in rows]
        if not rows:
            reader.wait(stop, 0.05)
    for thread in threads:
        thread.join()
    rows, _ = reader.events("requests", cursor, 1000)
    seen += [row["request_id"] for row in rows]
    assert sorted(seen) == sorted(f"w{w}-{i}" for w in range(len(writers)) for i in range(per_writer))


def test_a_reader_is_woken_by_another_writer(open_log):
    writer, reader, stop = open_log(), open_log(), threading.Event()
    reader.wait(stop, 0.05)  # listening
    threading.Timer(0.2, lambda: writer.submit(forwarded("r0"))).start()
    started = time.monotonic()
    reader.wait(stop, 5.0)
    assert 0.1 < time.monotonic() - started < 0.9  # woken by the write, before the once-a-second look


def test_a_namespace_reads_its_own_rows_and_nobody_elses(open_log):
    log = open_log()
    log.submit(forwarded("a0", "capital of France?", namespace="team-a"))
    log.submit(forwarded("b0", "capital of France?", namespace="team-b"))
    log.submit(forwarded("nobody", "capital of France?", namespace=""))  # unresolved: logged, never learned
    log.submit(served("a1", namespace="team-a"))
    log.flush()
    log.submit(feedback_row("a1", False, "team-a"))
    log.flush()
    assert log.namespaces() == ["team-a", "team-b"]
    rows, _ = log.events("requests", 0, 10, "team-a")
    assert [r["request_id"] for r in rows] == ["a0", "a1"] and {r["namespace"] for r in rows} == {"team-a"}
    assert [r["request_id"] for r in log.events("requests", 0, 10, "team-b")[0]] == ["b0"]
    assert [r["request_id"] for r in log.events("requests", 0, 10, None)[0]] == ["a0", "b0", "nobody", "a1"]
    assert [r["request_id"] for r in log.events("feedback", 0, 10, "team-a")[0]] == ["a1"]
    assert log.events("feedback", 0, 10, "team-b")[0] == []
    assert log.stored_local_answer("a1", "team-a") is not None and log.stored_local_answer("a1", "team-b") is None
    assert log.request_is_logged("b0", "team-b") and not log.request_is_logged("b0", "team-a")
    assert log.end("team-b")["requests"] < log.end("team-a")["requests"] == log.end(None)["requests"]
    assert log.backlog({}, "team-b") == 1  # b0's own end, not the log's


def test_postgres_row_level_security_holds_a_read_to_its_namespace_whatever_its_sql(database_url):
    """A query that forgets its namespace's WHERE still sees its namespace alone, and a transaction
    that names no namespace sees no rows at all. finch's role here is neither superuser nor BYPASSRLS
    (the ``database_url`` fixture), and owns the tables: forced security binds it anyway."""
    import psycopg

    log = PostgresLog(database_url)
    log.start()
    try:
        for request_id, namespace in (("a0", "team-a"), ("b0", "team-b"), ("b1", "team-b")):
            log.submit(forwarded(request_id, namespace=namespace))
        log.submit(served("a1", namespace="team-a"))
        log.flush()
        tables = ("requests", "examples", "local_answers", "namespaces")
        seen = {t: log.reader.rows(f"SELECT * FROM {t}", scope="team-b") for t in tables}  # no WHERE
        assert {r["id"] for r in seen["requests"]} == {"b0", "b1"}
        assert {r["request_id"] for r in seen["examples"]} == {"b0", "b1"} and seen["local_answers"] == []
        assert [r["name"] for r in seen["namespaces"]] == ["team-b"]
        assert len(log.reader.rows("SELECT * FROM requests", scope=None)) == 4  # every namespace's, by name
        with psycopg.connect(database_url) as conn:
            role = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()
            assert role == (False, False)
            for table in tables:  # no namespace named: nothing
                assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
            conn.execute("SELECT set_config('finch.namespace', 'team-a', false)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # nor may it write another's rows
                conn.execute("INSERT INTO feedback (request_id, ts, good, namespace) VALUES ('b0', 0, 0, 'team-b')")
    finally:
        log.close()


def test_a_namespace_forgets_a_question_or_everything_and_nobody_elses(open_log):
    log = open_log()
    log.submit(forwarded("a0", "Capital of France?", namespace="team-a"))
    log.submit(forwarded("a1", "capital  of france?", namespace="team-a"))  # the same, normalised
    log.submit(forwarded("a2", "capital of Spain?", namespace="team-a"))
    log.submit(forwarded("b0", "capital of France?", namespace="team-b"))
    log.flush()
    assert log.forget_question("team-a", ask("capital of france?")) == 2
    log.flush()
    assert log.example_count("team-a") == 1 and log.example_count("team-b") == 1
    (row,), _ = log.events("forgets", 0, 10, "team-a")
    assert Conversation.from_json(row["conversation"]) == ask("capital of france?")
    assert log.events("forgets", 0, 10, "team-b")[0] == []
    assert log.end("team-a")["forgets"] == row["seq"]
    assert log.forget_question("team-b", None) == -1  # everything it taught
    log.flush()
    assert log.example_count("team-b") == 0 and log.example_count("team-a") == 1
    (everything,), _ = log.events("forgets", 0, 10, "team-b")
    assert everything["conversation"] is None
    assert log.totals("team-b")["requests"] == 1  # the numbers stay
    log.submit(forwarded("b1", "capital of Italy?", namespace="team-b"))
    log.flush()
    assert log.forget(namespace="team-a") == 1 and log.example_count("team-b") == 1  # one namespace's only
