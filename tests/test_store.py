import sqlite3
import time

from finch.conversation import Conversation
from finch.sse import sse_event
from finch.store.db import Store, connect
from finch.store.sqlite import SqliteLog
from finch.store.writer import RequestRecord


def messages_record(request_id: str, **fields) -> RequestRecord:
    return RequestRecord(id=request_id, ts=time.time(), method="POST", path="/v1/messages", **fields)


def test_migrations_apply_once_and_wal_is_on(tmp_path):
    db = tmp_path / "finch.db"
    connect(db).close()
    conn = connect(db)  # second open: nothing re-applied
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations")]
    assert names == [
        "0001_requests.sql",
        "0002_learning.sql",
        "0003_score.sql",
        "0004_attempt.sql",
        "0005_decision.sql",
        "0006_learning_seq.sql",
        "0007_max_tokens.sql",
        "0008_namespace.sql",
        "0009_end_user.sql",
        "0010_forgets.sql",
    ]
    conn.close()


def test_a_record_sqlite_cannot_take_loses_only_itself_not_its_batch(tmp_path):
    """A lone surrogate (valid in JSON's escapes, not in UTF-8) once rolled back every record that
    shared its batch."""
    store = Store(tmp_path / "finch.db")
    store.start()
    for i, model in enumerate(["claude-haiku-4-5", "claude-\ud800", "claude-haiku-4-5"]):
        store.submit(messages_record(f"r{i}", route="reject", reason="invalid_request_error", status=400, model=model))
    store.flush()
    store.close()
    rows = sqlite3.connect(tmp_path / "finch.db").execute("SELECT id FROM requests ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["r0", "r2"]


def test_writer_commits_rows_and_examples_off_the_caller(tmp_path):
    store = Store(tmp_path / "finch.db")
    seen = []
    store.add_listener(lambda record, summary, cost: seen.append((record.id, summary.output_tokens, cost)))
    store.start()
    stream = sse_event("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 1000}}})
    stream += sse_event(
        "content_block_delta",
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "answer"}},
    )
    stream += sse_event(
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 200}},
    )
    conversation = Conversation(system="", turns=(("user", "question"),))
    for i in range(50):
        store.submit(
            messages_record(
                f"r{i}",
                route="forward",
                reason="cold_start",
                status=200,
                model="claude-haiku-4-5",
                stream=True,
                is_sse=True,
                chunks=[stream[:30], stream[30:]],
                conversation=conversation,
            )
        )
    store.flush()
    store.close()
    assert len(seen) == 50
    assert seen[0][1] == 200 and abs(seen[0][2] - (1000 * 1 + 200 * 5) / 1e6) < 1e-12
    totals = SqliteLog(tmp_path / "finch.db", writer=False).totals()
    assert totals["requests"] == 50 and totals["output_tokens"] == 50 * 200
    assert SqliteLog(tmp_path / "finch.db", writer=False).example_count() == 50
    conn = sqlite3.connect(tmp_path / "finch.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT answer FROM examples LIMIT 1").fetchone()[0] == "answer"
