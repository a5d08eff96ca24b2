"""Hostile input: property-based requests against a running finch. Whatever a client sends, finch
answers with a status below 500 that it produced itself, in the API's error shape, and stays up."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finch.config import load_settings
from finch.server.app import build_app
from finch.server.runner import ServerThread
from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, TeacherConfig, build_teacher_app
from tests.conftest import QA, TEST_KEY

TRIED = {"cases": 0}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    teacher = ServerThread(build_teacher_app(Teacher(Corpus(QA), TeacherConfig(require_auth=False)))).start()
    home = tmp_path_factory.mktemp("fuzz-home")
    overrides = {"home": str(home), "upstream_url": teacher.url, "preset": "tiny", "max_body_bytes": 200_000}
    finch = ServerThread(build_app(load_settings(overrides, environ={}))).start()
    client = httpx.Client(base_url=finch.url, timeout=30, headers={"x-api-key": TEST_KEY})
    yield client
    client.close()
    finch.stop()
    teacher.stop()
    print(f"\nfuzz cases tried: {TRIED['cases']}")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool", 7]),
            "content": st.one_of(st.text(max_size=200), json_values),
        }
    ),
    max_size=4,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "model": st.one_of(st.just("claude-haiku-4-5"), json_values),
            "messages": st.one_of(messages, json_values),
            "max_tokens": st.one_of(st.integers(-5, 5000), json_values),
        },
        optional={"stream": st.one_of(st.booleans(), json_values), "system": json_values, "tools": json_values},
    ).map(lambda d: json.dumps(d).encode()),
)


def assert_well_formed(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()
        assert error["type"] == "error" and isinstance(error["error"]["message"], str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_messages_never_answers_500_to_a_client_mistake(servers, body):
    TRIED["cases"] += 1
    assert_well_formed(servers.post("/v1/messages", content=body, headers={"content-type": "application/json"}))


chat_bodies = st.one_of(
    st.binary(max_size=300),
    st.fixed_dictionaries(
        {
            "model": st.one_of(st.just("claude-haiku-4-5"), json_values),
            "messages": st.one_of(st.just([{"role": "user", "content": QA[0][0]}]), messages, json_values),
        },
        optional={
            key: json_values | st.integers(-2, 3)
            for key in (
                "max_tokens",
                "max_completion_tokens",
                "stream",
                "n",
                "tools",
                "response_format",
                "stream_options",
            )
        },
    ).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=chat_bodies)
def test_chat_completions_never_answers_500_to_a_client_mistake(servers, body):
    TRIED["cases"] += 1
    response = servers.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:  # in the dialect's own shape
        assert isinstance(response.json()["error"]["message"], str)


# A client library will not even send a value with leading or trailing spaces, so neither do we.
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200).map(str.strip)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz/_-.%0123456789", max_size=40),
    value=header_values,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
)
def test_passthrough_and_headers_never_break_finch(servers, path, value, method):
    TRIED["cases"] += 1
    headers = {"anthropic-version": value, "anthropic-beta": value, "x-finch-token": value, "content-type": value}
    response = servers.request(method, "/v1/" + path, content=b"{}", headers=headers)
    assert response.status_code < 500 or response.headers.get("x-finch-source") == "upstream"


def test_finch_is_still_healthy_after_the_fuzzing(servers):
    assert servers.get("/healthz").json() == {"status": "ok"}
    body = {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": QA[0][0]}]}
    assert servers.post("/v1/messages", json=body).json()["content"][0]["text"] == QA[0][1]


@pytest.mark.parametrize("target", [b"/v1/mo%00dels", b"/v1/messages%00", b"/v1/mo%7Fdels", b"/v1/%01"])
def test_a_control_character_in_the_path_is_a_clear_400(servers, target):
    """Sent over a raw socket, as an attacker would: an HTTP client would have normalised the path.
    (A query string is forwarded as it came, still percent-encoded, so %00 there is the upstream's.)"""
    import socket

    host, port = servers.base_url.host, servers.base_url.port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert servers.get("/healthz").status_code == 200


def test_a_lone_surrogate_in_the_model_is_a_400(servers):
    """JSON allows the escape "\\ud800", UTF-8 does not: such a model name once broke the log's batch
    it fell in (tests/test_store.py has the log's side)."""
    body = b'{"model": "claude-\\ud800", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'
    response = servers.post("/v1/messages", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "model" in response.json()["error"]["message"]
