"""End to end: the official anthropic SDK (or httpx) -> finch -> the teacher simulator, all real."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import stat
import time

import anthropic
import httpx
import pytest

from tests.conftest import QA, TEST_KEY, flush, queue_faults, teacher_stats

MODEL = "claude-haiku-4-5"


def sdk(finch, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=finch.url, api_key=TEST_KEY, max_retries=0, **kwargs)


def ask(question: str, **extra) -> dict:
    return {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": question}], **extra}


def rows(home, sql="SELECT * FROM requests ORDER BY ts"):
    conn = sqlite3.connect(home / "finch.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def test_sdk_non_streaming_answer_headers_and_log(finch, teacher, home):
    raw = sdk(finch).messages.with_raw_response.create(**ask(QA[0][0]))
    message = raw.parse()
    assert message.content[0].text == QA[0][1]
    assert raw.headers["x-finch-source"] == "upstream"
    assert raw.headers["x-finch-request-id"].startswith("req_finch_")
    assert raw.headers["request-id"].startswith("req_teacher_")  # upstream headers come back
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "4000"
    assert teacher_stats(teacher)["last_request"]["auth"] == "bearer"

    flush(finch)
    [row] = rows(home)
    assert row["route"] == "forward" and row["status"] == 200 and row["model"] == MODEL
    assert row["input_tokens"] == message.usage.input_tokens > 0
    assert row["output_tokens"] == message.usage.output_tokens > 0
    assert row["cost_usd"] == pytest.approx((row["input_tokens"] * 1 + row["output_tokens"] * 5) / 1e6)
    [example] = rows(home, "SELECT * FROM examples")
    assert json.loads(example["conversation"])["turns"] == [["user", QA[0][0]]]
    assert example["answer"] == QA[0][1]


def test_sdk_streaming_relays_events_as_they_arrive(start_teacher, start_finch, home):
    teacher = start_teacher(token_delay=0.03)
    finch = start_finch(teacher.url)
    arrivals = []
    started = time.perf_counter()
    with sdk(finch).messages.stream(**ask("Tell me a long story")) as stream:
        for _ in stream.text_stream:
            arrivals.append(time.perf_counter() - started)
        final = stream.get_final_message()
    assert final.content[0].text == QA[3][1]
    # 40 pieces 30 ms apart: a buffering proxy would deliver them all at once at the end.
    assert len(arrivals) == 40
    assert arrivals[-1] - arrivals[0] > 0.8
    assert arrivals[0] < arrivals[-1] / 3

    flush(finch)
    [row] = rows(home)
    assert row["stream"] == 1 and row["output_tokens"] == 40 and row["input_tokens"] > 0
    assert row["ttfb_ms"] < row["latency_ms"]
    [example] = rows(home, "SELECT answer FROM examples")
    assert example["answer"] == QA[3][1]


def test_one_concise_log_line_per_request_and_never_a_key(finch, teacher, caplog):
    caplog.set_level(logging.INFO, logger="finch.server.app")
    sdk(finch).messages.create(**ask(QA[0][0]))
    httpx.get(f"{finch.url}/v1/nowhere", headers={"x-api-key": TEST_KEY})
    flush(finch)
    lines = [r.getMessage() for r in caplog.records if r.name == "finch.server.app"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("POST /v1/messages forward cold_start 200 ")
    assert lines[1].startswith("GET /v1/nowhere forward passthrough 404 ")
    assert TEST_KEY not in caplog.text


def test_x_api_key_is_forwarded_as_received(finch, teacher):
    response = httpx.post(finch.url + "/v1/messages", json=ask(QA[2][0]), headers={"x-api-key": TEST_KEY})
    assert response.status_code == 200
    assert teacher_stats(teacher)["last_request"]["auth"] == "x-api-key"


def test_configured_key_is_injected_only_when_the_client_has_none(start_finch, teacher):
    finch = start_finch(teacher.url, api_key="fake-configured-key")
    response = httpx.post(finch.url + "/v1/messages", json=ask(QA[2][0]))
    assert response.status_code == 200
    assert teacher_stats(teacher)["last_request"]["auth"] == "x-api-key"


def test_no_key_anywhere_gets_the_upstream_401(finch, teacher):
    response = httpx.post(finch.url + "/v1/messages", json=ask(QA[2][0]))
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_count_tokens_and_models_pass_through(finch, teacher):
    client = sdk(finch)
    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello there"}])
    assert counted.input_tokens > 0
    models = client.models.list()
    assert MODEL in [m.id for m in models.data]
    assert client.models.retrieve(MODEL).id == MODEL
    by_path = teacher_stats(teacher)["by_path"]
    assert by_path["/v1/messages/count_tokens"] == 1 and by_path["/v1/models"] == 1


def test_query_string_and_anthropic_headers_are_kept(finch, teacher):
    headers = {
        "x-api-key": TEST_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "context-management-2025-06-27",
    }
    response = httpx.post(finch.url + "/v1/messages?beta=true", json=ask(QA[0][0]), headers=headers)
    assert response.status_code == 200
    last = teacher_stats(teacher)["last_request"]
    assert last["query"] == "beta=true"
    assert last["anthropic-version"] == "2023-06-01"
    assert last["anthropic-beta"] == "context-management-2025-06-27"


def test_body_reaches_the_upstream_byte_for_byte(finch, teacher):
    # Unknown fields, odd spacing, key order and a system-role message must all survive untouched.
    raw = (
        b'{ "thinking": {"type": "enabled", "budget_tokens": 1024},"model":"' + MODEL.encode() + b'",'
        b'"context_management": {"edits": []},  "max_tokens": 50,\n"messages": ['
        b'{"role": "system", "content": "be brief"},'
        b'{"role": "user", "content": [{"type": "text", "text": "What is two plus two?",'
        b' "cache_control": {"type": "ephemeral"}}]}], "zzz_future_field": [1, 2.50, null]}'
    )
    response = httpx.post(
        finch.url + "/v1/messages",
        content=raw,
        headers={"x-api-key": TEST_KEY, "content-type": "application/json"},
    )
    assert response.status_code == 200
    expected = hashlib.sha256(raw).hexdigest()
    assert response.headers["x-teacher-body-sha256"] == expected
    assert teacher_stats(teacher)["last_request"]["body_sha256"] == expected


@pytest.mark.parametrize(
    ("faults", "status", "error_class", "attempts"),
    [
        (["400"], 400, anthropic.BadRequestError, 1),
        (["401"], 401, anthropic.AuthenticationError, 1),
        (["429", "429", "429"], 429, anthropic.RateLimitError, 3),
        (["529", "529", "529"], 529, anthropic.InternalServerError, 3),
    ],
)
def test_upstream_errors_pass_through_after_safe_retries(finch, teacher, home, faults, status, error_class, attempts):
    queue_faults(teacher, *faults)
    with pytest.raises(error_class) as caught:
        sdk(finch).messages.create(**ask(QA[0][0]))
    assert caught.value.status_code == status
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["message"] == f"injected {faults[0]}"
    assert teacher_stats(teacher)["requests"] == attempts
    flush(finch)
    [row] = rows(home)
    assert row["status"] == status and row["attempts"] == attempts


def test_retries_recover_before_the_first_byte(finch, teacher, home):
    queue_faults(teacher, "529", "500")
    message = sdk(finch).messages.create(**ask(QA[0][0]))
    assert message.content[0].text == QA[0][1]
    assert teacher_stats(teacher)["requests"] == 3
    flush(finch)
    assert rows(home)[0]["attempts"] == 3


def test_no_retry_once_bytes_reached_the_client(finch, teacher, home):
    queue_faults(teacher, "drop")
    response = httpx.post(
        finch.url + "/v1/messages",
        json=ask("Tell me a long story", stream=True),
        headers={"x-api-key": TEST_KEY},
    )
    assert response.status_code == 200
    assert "event: message_start" in response.text
    assert response.text.rstrip().endswith("}")
    last_event = response.text.strip().split("\n\n")[-1]
    assert last_event.startswith("event: error")
    assert json.loads(last_event.split("data: ", 1)[1])["error"]["type"] == "api_error"
    assert teacher_stats(teacher)["requests"] == 1  # never retried after the first byte
    flush(finch)
    [row] = rows(home)
    assert row["error_type"] == "upstream_disconnected"
    assert rows(home, "SELECT * FROM examples") == []  # a cut answer teaches nothing


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[1, 2, 3]",
        b'"a string"',
        b"\xff\xfe\x00garbage",
        b'{"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": 7, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "m", "max_tokens": "10", "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "m", "max_tokens": true, "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "m", "max_tokens": 10}',
        b'{"model": "m", "max_tokens": 10, "messages": {}}',
        b'{"model": "m", "max_tokens": 10, "messages": ["hi"]}',
        b'{"model": "m", "max_tokens": 10, "messages": [{"role": "user"}]}',
        b'{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_requests_are_answered_400_without_reaching_upstream(finch, teacher, body):
    response = httpx.post(finch.url + "/v1/messages", content=body, headers={"x-api-key": TEST_KEY})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"]
    assert teacher_stats(teacher)["requests"] == 0


def test_oversized_body_gets_413(start_finch, teacher):
    finch = start_finch(teacher.url, max_body_bytes=1000)
    body = ask("x" * 2000)
    response = httpx.post(finch.url + "/v1/messages", json=body, headers={"x-api-key": TEST_KEY})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert teacher_stats(teacher)["requests"] == 0


def test_unknown_paths_get_an_anthropic_shaped_404(finch):
    response = httpx.get(finch.url + "/nope")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_client_token_is_required_when_set(start_finch, teacher):
    finch = start_finch(teacher.url, client_token="let-me-in")
    denied = httpx.post(finch.url + "/v1/messages", json=ask(QA[0][0]), headers={"x-api-key": TEST_KEY})
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
    allowed = httpx.post(
        finch.url + "/v1/messages",
        json=ask(QA[0][0]),
        headers={"x-api-key": TEST_KEY, "x-finch-token": "let-me-in"},
    )
    assert allowed.status_code == 200
    assert teacher_stats(teacher)["requests"] == 1


def test_health_metrics_and_stats(finch, teacher):
    client = sdk(finch)
    client.messages.create(**ask(QA[0][0]))
    client.messages.create(**ask(QA[1][0], stream=False))
    flush(finch)
    assert httpx.get(finch.url + "/healthz").json() == {"status": "ok"}
    metrics = httpx.get(finch.url + "/metrics").text
    assert 'finch_requests_total{namespace="default",reason="cold_start",route="forward",status="200"} 2.0' in metrics
    assert "finch_request_latency_seconds_bucket" in metrics
    assert 'finch_tokens_total{direction="output",namespace="default",route="forward"}' in metrics
    stats = httpx.get(finch.url + "/finch/stats").json()
    assert stats["totals"]["requests"] == 2 and stats["totals"]["forwarded"] == 2
    assert stats["totals"]["cost_usd"] > 0
    assert stats["examples"] == 2
    assert stats["namespaces"] == [{"namespace": "default", "requests": 2, "until_first_local": None}]


def test_ineligible_requests_are_forwarded_but_not_kept_as_examples(finch, teacher, home):
    client = sdk(finch)
    tools = [{"name": "get_time", "description": "the time", "input_schema": {"type": "object", "properties": {}}}]
    client.messages.create(**ask(QA[0][0], tools=tools))
    flush(finch)
    [row] = rows(home)
    assert row["route"] == "forward" and row["reason"] == "ineligible:tools"
    assert rows(home, "SELECT * FROM examples") == []


def test_home_is_private_and_never_holds_a_key(start_finch, teacher, home):
    finch = start_finch(teacher.url, api_key="fake-configured-key-77")
    client = sdk(finch)
    client.messages.create(**ask(QA[0][0]))
    with client.messages.stream(**ask(QA[1][0])) as stream:
        stream.get_final_message()
    httpx.post(finch.url + "/v1/messages", json=ask(QA[2][0]))  # uses the configured key
    httpx.post(finch.url + "/v1/messages", content=b"{bad", headers={"x-api-key": TEST_KEY})
    flush(finch)
    finch.server.stop()  # checkpoint the WAL so every byte is in the files we grep
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    files = [p for p in home.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        data = path.read_bytes()
        assert TEST_KEY.encode() not in data, path
        assert b"fake-configured-key-77" not in data, path


def test_an_upstream_hang_past_the_read_timeout_is_a_clean_504(start_teacher, start_finch, home):
    teacher = start_teacher(hang_seconds=1.5)
    finch = start_finch(teacher.url, read_timeout=0.5, max_retries=0)
    queue_faults(teacher, "hang")
    started = time.perf_counter()
    response = httpx.post(finch.url + "/v1/messages", json=ask(QA[0][0]), headers={"x-api-key": TEST_KEY}, timeout=30)
    assert time.perf_counter() - started < 4
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"
    follow_up = httpx.post(finch.url + "/v1/messages", json=ask(QA[0][0]), headers={"x-api-key": TEST_KEY})
    assert follow_up.status_code == 200  # finch is still up
    flush(finch)
    assert [r["status"] for r in rows(home)] == [504, 200]


def test_a_json_body_cut_midway_is_not_retried_and_is_logged(finch, teacher, home):
    queue_faults(teacher, "drop")
    with pytest.raises(httpx.HTTPError):
        httpx.post(finch.url + "/v1/messages", json=ask(QA[0][0]), headers={"x-api-key": TEST_KEY})
    assert teacher_stats(teacher)["requests"] == 1
    flush(finch)
    [row] = rows(home)
    assert row["error_type"] == "upstream_disconnected"
