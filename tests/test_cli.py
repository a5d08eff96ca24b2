import json
import sqlite3

from click.testing import CliRunner

from finch.cli import _is_loopback, main


def test_demo_runs_offline_and_its_log_is_readable_by_stats(tmp_path):
    runner = CliRunner()
    demo = ["demo", "--history", "8", "--requests", "12", "--home", str(tmp_path), "--json"]
    result = runner.invoke(main, demo)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["imported"] == 8 and report["totals"]["requests"] == 20  # the history is in the log
    assert sum(q["requests"] for q in report["by_quarter"]) == 12 and report["first_local"] is None
    assert report["learning"]["learned"] == 20 and report["learning"]["phase"] == "cold_start"

    stats = runner.invoke(main, ["stats", "--home", str(tmp_path), "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["totals"]["forwarded"] == 20
    table = runner.invoke(main, ["stats", "--home", str(tmp_path)])
    assert "total" in table.stdout and "cold_start" in table.stdout and "learned from 20 answers" in table.stdout
    assert "still learning its first answers" in table.stdout  # each reason explained in words
    assert "none certified yet" in table.stdout and "clean judged answers in it to go" in table.stdout

    assert (tmp_path / "models" / "generator").is_dir() and (tmp_path / "tokenizer.json").exists()
    attempts = "SELECT COUNT(attempt) FROM learning"
    assert sqlite3.connect(tmp_path / "finch.db").execute(attempts).fetchone()[0] == 20  # each verdict's answer
    forgot = runner.invoke(main, ["forget", "--home", str(tmp_path), "--yes"])
    assert forgot.exit_code == 0 and "deleted" in forgot.stdout
    assert sqlite3.connect(tmp_path / "finch.db").execute(attempts).fetchone()[0] == 0
    assert (
        json.loads(runner.invoke(main, ["stats", "--home", str(tmp_path), "--json"]).stdout)["totals"]["requests"] == 20
    )
    reset = runner.invoke(main, ["reset", "--home", str(tmp_path), "--yes"])
    assert reset.exit_code == 0
    assert not (tmp_path / "models").exists() and not (tmp_path / "tokenizer.json").exists()
    assert (tmp_path / "finch.db").exists()


def test_stats_on_an_empty_home(tmp_path):
    result = CliRunner().invoke(main, ["stats", "--home", str(tmp_path / "nothing"), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["totals"]["requests"] == 0


def test_bad_config_is_a_clear_error(tmp_path):
    (tmp_path / "config.toml").write_text("port = 'eighty'")
    result = CliRunner().invoke(main, ["stats", "--home", str(tmp_path)])
    assert result.exit_code != 0 and "port" in result.output


def test_loopback_detection():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.4")


def test_chat_sends_turns_through_finch_and_shows_the_route(start_finch, teacher):
    from finch.chat import ChatSession
    from tests.conftest import QA, TEST_KEY

    finch = start_finch(teacher.url, api_key=TEST_KEY)
    lines = iter([QA[2][0], "/bad", "/stats", "/help", "/new", "/quit"])
    out: list[str] = []
    session = ChatSession(finch.url, "claude-haiku-4-5", 100)
    session.loop(input_fn=lambda: next(lines), echo=out.append)
    assert QA[2][1] in out
    assert any(line.startswith("  [upstream,") for line in out)
    assert any("/quit" in line for line in out)  # the help text
    assert "noted" in out  # a forwarded answer's mark is recorded, with nothing local to learn from
    assert session.messages == []  # /new cleared the conversation
