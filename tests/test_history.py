"""`finch import`: past exchanges, as a gateway logged them, are learned as live traffic is, and a
question from that history is answered locally from the first live request."""

import json
import sqlite3

import anthropic
import httpx2
from click.testing import CliRunner

from finch.cli import main
from finch.config import load_settings
from finch.server.app import build_app
from finch.server.runner import running
from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, build_teacher_app

QUESTIONS = {
    "How do I reset my password?": "Open Settings, choose Security, then Reset password.",
    "What are your opening hours?": "We are open from 9am to 5pm, Monday to Friday.",
    "How do I cancel my order?": "Go to Orders, pick the order, and press Cancel.",
}
# Learning quickly enough for a test: a loose bound, a short cold start, no audits.
FAST = {"FINCH_MAX_BAD_LOCAL": "0.1", "FINCH_COLD_START": "1", "FINCH_CONSERVATIVE_UNTIL": "1", "FINCH_SAMPLING": "*:0"}


def logged_history(teacher_url: str, rounds: int) -> list[str]:
    """Exchanges with the teacher, as a gateway would log them: Messages bodies, some streamed (the
    event stream kept as text), some through Chat Completions."""
    lines = []
    with httpx2.Client(base_url=teacher_url, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}) as http:
        for k in range(rounds):
            for i, question in enumerate(QUESTIONS):
                ts = 1_700_000_000 + 60 * (k * len(QUESTIONS) + i)
                if (k + i) % 5 == 3:
                    request = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": question}]}
                    response = http.post("/v1/chat/completions", json=request).json()
                    lines.append(json.dumps({"request": request, "response": response, "timestamp": ts}))
                    continue
                stream = (k + i) % 3 == 0
                request = {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 200,
                    "stream": stream,
                    "messages": [{"role": "user", "content": question}],
                }
                reply = http.post("/v1/messages", json=request)
                response = reply.text if stream else reply.json()
                lines.append(json.dumps({"request": request, "response": response, "timestamp": ts}))
    return lines


def imported_rows(home) -> int:
    with sqlite3.connect(home / "finch.db") as conn:
        return conn.execute("SELECT COUNT(*) FROM requests WHERE reason = 'imported'").fetchone()[0]


def test_bad_lines_are_named_and_the_rest_is_imported_once(tmp_path):
    teacher = Teacher(Corpus(QUESTIONS.items()))
    with running(build_teacher_app(teacher)) as upstream:
        good = logged_history(upstream.url, 2)
    tools = json.loads(good[0])
    tools["request"]["tools"] = [{"name": "lookup", "input_schema": {"type": "object"}}]
    lines = [
        good[0],
        "{not json",
        json.dumps({"request": {"model": "claude-haiku-4-5", "messages": []}, "response": {}}),
        json.dumps(tools),
        json.dumps({"response": {}}),
        *good[1:],
    ]
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(lines) + "\n")
    home = tmp_path / "home"
    runner = CliRunner()

    result = runner.invoke(main, ["import", str(history), "--home", str(home), "--no-learn"])
    assert result.exit_code == 1, result.output
    assert f"{history}:2: not JSON" in result.output
    assert f"{history}:3: request: messages" in result.output  # the API's own words for an empty list
    assert f"{history}:5: request: expected the request body" in result.output
    assert "1 ineligible:tools" in result.output
    assert imported_rows(home) == len(good)  # every good line, none of the others

    again = runner.invoke(main, ["import", str(history), "--home", str(home), "--no-learn"])
    assert f"0 exchanges imported, {len(good)} already there" in again.output
    assert imported_rows(home) == len(good)  # twice adds nothing

    recent = tmp_path / "recent"
    later = runner.invoke(main, ["import", str(history), "--home", str(recent), "--since", "2023-11-14T22:15:00Z"])
    assert later.exit_code == 1 and imported_rows(recent) < len(good)  # only the exchanges after it


def test_imported_history_answers_the_first_live_request(tmp_path, monkeypatch):
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    teacher = Teacher(Corpus(QUESTIONS.items()))
    with running(build_teacher_app(teacher)) as upstream:
        history = tmp_path / "history.jsonl"
        history.write_text("\n".join(logged_history(upstream.url, 30)) + "\n")
        result = CliRunner().invoke(main, ["import", str(history), "--home", str(home)])
        assert result.exit_code == 0, result.output
        assert "90 exchanges imported" in result.output

        teacher.reset()
        app = build_app(load_settings({"home": str(home), "upstream_url": upstream.url, "api_key": "k"}))
        with running(app) as proxy:
            client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
            question = "What are your opening hours?"
            raw = client.messages.with_raw_response.create(
                model="claude-haiku-4-5", max_tokens=200, messages=[{"role": "user", "content": question}]
            )
            assert raw.headers["x-finch-source"] == "local"  # the very first live request
            assert raw.parse().content[0].text == QUESTIONS[question]
        assert httpx2.get(upstream.url + "/_teacher/stats").json()["requests"] == 0
