"""The connection edge, over raw sockets as a slow or hostile client would speak: every deadline ends in
a 408 and a closed connection, the connection cap in a 503, a malformed request in a 400, all in the
Messages API's error shape, while a normal client is still served."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from finch.config import load_settings
from finch.server.app import build_app
from finch.server.runner import ServerThread
from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, TeacherConfig, build_teacher_app
from tests.conftest import QA, TEST_KEY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from rawfuzz import fuzz  # noqa: E402
from slow_clients import allow_descriptors, open_descriptors, trickle  # noqa: E402

LIMITS = {"header_timeout": 1.0, "body_timeout": 2.0, "keep_alive_timeout": 1.0, "max_connections": 600}
ASK = {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": QA[0][0]}]}


@pytest.fixture
def edge(tmp_path):
    """finch with short edge deadlines, in front of the teacher; yields (host, port, settings)."""
    teacher = ServerThread(build_teacher_app(Teacher(Corpus(QA), TeacherConfig(require_auth=False)))).start()
    settings = load_settings({"home": str(tmp_path), "upstream_url": teacher.url, "preset": "tiny", **LIMITS}, {})
    finch = ServerThread(build_app(settings), settings=settings).start()
    yield finch.host, finch.port, settings
    finch.stop()
    teacher.stop()


def read_reply(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    sock.settimeout(timeout)
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    return raw, time.monotonic()


def error_of(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body)


def served_normally(host: str, port: int) -> None:
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10, headers={"x-api-key": TEST_KEY}) as client:
        assert client.post("/v1/messages", json=ASK).json()["content"][0]["text"] == QA[0][1]


def test_headers_that_never_finish_get_a_408_and_a_closed_connection(edge):
    host, port, settings = edge
    opened = time.monotonic()  # before connecting: finch's deadline starts when it accepts
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        raw, closed = read_reply(sock, timeout=10)
    status, error = error_of(raw)
    assert status == 408 and error["error"]["type"] == "timeout_error" and "headers" in error["error"]["message"]
    assert settings.header_timeout <= closed - opened < settings.header_timeout + 2


def test_a_connection_that_says_nothing_is_closed(edge):
    host, port, settings = edge
    with socket.create_connection((host, port)) as sock:
        opened = time.monotonic()
        raw, closed = read_reply(sock, timeout=10)
    assert raw.startswith(b"HTTP/1.1 408")
    assert closed - opened < settings.header_timeout + 2


def test_a_body_that_never_arrives_gets_a_408_and_finch_stays_well(edge):
    host, port, settings = edge
    with socket.create_connection((host, port)) as sock:
        sent = time.monotonic()  # before: finch's deadline may start before sendall returns here
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\ncontent-type: application/json\r\n"
            b'content-length: 500\r\n\r\n{"model":'
        )
        raw, closed = read_reply(sock, timeout=10)
    status, error = error_of(raw)
    assert status == 408 and "body" in error["error"]["message"]
    assert settings.body_timeout <= closed - sent < settings.body_timeout + 2
    served_normally(host, port)


def test_an_idle_kept_alive_connection_is_closed(edge):
    host, port, settings = edge
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = time.monotonic()
        raw, closed = read_reply(sock, timeout=10)
    assert raw.startswith(b"HTTP/1.1 200") and b"408" not in raw  # answered, then closed quietly
    assert closed - answered < settings.keep_alive_timeout + 2


def test_a_malformed_request_gets_a_400_in_the_api_shape(edge):
    host, port, _ = edge
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-length: -4\r\n\r\n")
        raw, _ = read_reply(sock, timeout=10)
    status, error = error_of(raw)
    assert status == 400 and error["error"]["type"] == "invalid_request_error"


def test_past_the_connection_cap_a_new_connection_gets_a_503(tmp_path):
    settings = load_settings({"home": str(tmp_path), "preset": "tiny", "learning": False, "max_connections": 4}, {})
    finch = ServerThread(build_app(settings), settings=settings).start()
    try:
        held = [socket.create_connection((finch.host, finch.port)) for _ in range(4)]
        time.sleep(0.2)  # let the server accept them
        with socket.create_connection((finch.host, finch.port)) as extra:
            raw, _ = read_reply(extra, timeout=5)
        status, error = error_of(raw)
        assert status == 503 and error["error"]["type"] == "overloaded_error"
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert httpx.get(f"{finch.url}/healthz", timeout=5).status_code == 200
    finally:
        finch.stop()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_500_clients_trickling_a_body_are_all_cut_off_and_a_normal_client_is_served(edge):
    host, port, settings = edge
    allow_descriptors(2500)  # 500 client sockets and 500 server sockets live in this one process
    served_normally(host, port)  # the upstream pool and the log are open before counting
    before = open_descriptors()

    async def main() -> list[float]:
        slow = [asyncio.create_task(trickle(host, port)) for _ in range(500)]
        await asyncio.sleep(0.5)
        await asyncio.to_thread(served_normally, host, port)  # still served while 500 hang
        return await asyncio.gather(*slow)

    held_for = asyncio.run(main())
    assert all(settings.body_timeout - 0.5 < t < settings.body_timeout + 3 for t in held_for), (
        min(held_for),
        max(held_for),
    )
    deadline = time.monotonic() + 10
    while open_descriptors() > before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_descriptors() <= before + 2
    served_normally(host, port)


def test_a_sample_of_raw_fuzz_cases_never_gets_a_5xx_finch_made(edge, caplog):
    """A few hundred of benchmarks/rawfuzz.py's cases, a different sample each run (the seed is shown).
    finch logs no error meanwhile: a request record the log could not write would show as one."""
    host, port, _ = edge
    caplog.set_level(logging.ERROR, logger="finch")
    seed = random.randrange(10**6)
    report = asyncio.run(fuzz(host, port, count=300, seed=seed, concurrency=16, timeout=10))
    assert report["finch_5xx"] == 0, (seed, report["finch_5xx_examples"])
    assert sum(report["statuses"].values()) == 300
    assert not [r for r in caplog.records if r.name.startswith("finch")], (seed, caplog.text[-2000:])
    served_normally(host, port)
