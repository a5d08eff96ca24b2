"""Shared fixtures: a teacher simulator and finch, both real servers on free loopback ports."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from finch.config import load_settings
from finch.server.app import build_app
from finch.server.runner import ServerThread
from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, TeacherConfig, build_teacher_app

# The PostgreSQL server the team tests use (`eval "$(.ci/postgres start)"` starts a throwaway one).
DATABASE_SERVER_ENV = "FINCH_TEST_DATABASE_URL"

TEST_KEY = "fake-client-key-4f9a17c2"  # grepped for in FINCH_HOME: it must never be stored

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    (
        "How do I reset my password?",
        "Open Settings, choose Security, then Reset password and follow the email link.",
    ),
    ("What is two plus two?", "Two plus two is four."),
    ("Tell me a long story", " ".join(f"word{i}" for i in range(40)) + "."),
]


@dataclass
class Running:
    server: ServerThread
    app: Any

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def corpus() -> Corpus:
    return Corpus(QA)


@pytest.fixture
def servers() -> Iterator[Callable[[Any], Running]]:
    """Start ASGI apps on free ports; all are stopped when the test ends."""
    started: list[ServerThread] = []

    def start(app: Any) -> Running:
        started.append(ServerThread(app).start())
        return Running(started[-1], app)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_teacher(corpus: Corpus, servers: Callable[[Any], Running]) -> Callable[..., Running]:
    def start(**config: Any) -> Running:
        return servers(build_teacher_app(Teacher(corpus, TeacherConfig(**{"retry_after": 0.0, **config}))))

    return start


@pytest.fixture
def teacher(start_teacher: Callable[..., Running]) -> Running:
    return start_teacher()


@pytest.fixture
def database_url() -> Iterator[str]:
    """A new, empty database for one test, on the server FINCH_TEST_DATABASE_URL names. Without that
    server the test fails in CI (CI=true), and is skipped elsewhere."""
    server = os.environ.get(DATABASE_SERVER_ENV)
    if not server:
        why = f'{DATABASE_SERVER_ENV} is not set: eval "$(.ci/postgres start)" starts a throwaway PostgreSQL'
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    # finch connects as a role of its own, as it should in production: no superuser, no BYPASSRLS,
    # so the row-level security that holds each namespace to its rows binds every test.
    name = f"finch_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS")
        admin.execute(f"CREATE DATABASE {name} OWNER {name}")
    scheme, rest = server.split("://", 1)
    host_and_db = rest.split("@", 1)[-1]
    yield f"{scheme}://{name}@{host_and_db.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.execute(f"DROP ROLE {name}")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "finch-home"


@pytest.fixture
def start_finch(home: Path, servers: Callable[[Any], Running]) -> Callable[..., Running]:
    def start(upstream_url: str, **overrides: Any) -> Running:
        # No trainer unless a test asks for one: most test the proxy, and a trainer's start (torch,
        # the models) would cost each a few CPU-seconds.
        overrides = {"preset": "tiny", "start_trainer": False, **overrides}
        return servers(build_app(load_settings({"home": str(home), "upstream_url": upstream_url, **overrides}, {})))

    return start


@pytest.fixture
def finch(start_finch: Callable[..., Running], teacher: Running) -> Running:
    return start_finch(teacher.url)


def teacher_stats(teacher: Running) -> dict[str, Any]:
    return httpx.get(teacher.url + "/_teacher/stats").json()


def queue_faults(teacher: Running, *faults: str) -> None:
    httpx.post(teacher.url + "/_teacher/faults", json={"queue": list(faults)}).raise_for_status()


def flush(finch: Running, timeout: float = 10.0) -> None:
    """Wait until every request finch has answered is committed to its log. A client may have its
    answer a moment before the server has recorded it: wait for the server's requests to finish."""
    proxy = finch.app.state.proxy
    deadline = time.monotonic() + timeout
    while proxy.pressure.in_flight and time.monotonic() < deadline:
        time.sleep(0.005)
    proxy.store.flush()
