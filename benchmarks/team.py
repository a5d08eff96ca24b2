"""The team tier, measured: what PostgreSQL adds on the request path, how fast what one replica
learns or hears reaches another, and what a namespace costs in storage.

  1. Latency. The teacher simulator, finch embedded (SQLite) and finch in the team tier
     (PostgreSQL, isolation by credential), each its own process on loopback; sequential
     non-streaming requests, alternating direct, embedded and team, so all three see the same
     machine. Reported: p50 and p99 of each, and the team tier's added time over embedded.
  2. Propagation. Two replicas (in this process) on one PostgreSQL log and one shared home, their
     trainers learning a corpus of distinct questions until they answer locally (waiting for the
     trainer after each round: this measures learning, then propagation). While they learn, a
     thread notes when each snapshot generation is published (the file's modification time) and
     when each replica serves it. Then "bad answer" marks are given on replica A, one question at
     a time, and replica B is asked (its decision, every 2 ms) until it stops serving the question.
  3. Storage. Rows and WAL bytes PostgreSQL took per 1,000 requests of part 2, and a namespace's
     snapshot size.

A throwaway cluster is started for the run (``.ci/postgres``, fsync on, as a real database runs).

Usage: python benchmarks/team.py [--requests 500] [--questions 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anthropic
import httpx
import psycopg

from finch.config import load_settings
from finch.conversation import Conversation
from finch.learning.status import read_published
from finch.server.app import build_app
from finch.server.runner import ServerThread, free_port
from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, build_teacher_app

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import start  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello"}]}
HEADERS = {"x-api-key": "bench-key-team-0001", "anthropic-version": "2023-06-01"}
LEARN = {"preset": "tiny", "cold_start": 10, "conservative_until": 100_000, "sampling": "*:0", "max_bad_local": 0.1}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Cluster:
    """A PostgreSQL cluster of the run's own (``.ci/postgres``), fsync on."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.env = {
            **os.environ,
            "FINCH_PG_DIR": tempfile.mktemp(prefix="finch-pg-bench-", dir="/tmp"),
            "FINCH_PG_PORT": str(port),
            "FINCH_PG_FSYNC": "on",
        }

    def run(self, command: str) -> str:
        script = str(ROOT / ".ci" / "postgres")
        return subprocess.run([script, command], env=self.env, check=True, capture_output=True, text=True).stdout

    def start(self) -> None:
        self.server = self.run("start").strip().split("=", 1)[1]

    def database(self, name: str) -> str:
        server = self.server
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return server.rsplit("/", 1)[0] + "/" + name


def latency(url: str, n: int, tmp: Path) -> dict:
    teacher_port, embedded_port, team_port = free_port(), free_port(), free_port()
    env = {**os.environ, "FINCH_PRESET": "tiny"}
    procs = [start(["teacher", "--port", str(teacher_port)], env, f"http://127.0.0.1:{teacher_port}/v1/models")]
    upstream = f"http://127.0.0.1:{teacher_port}"
    for port, extra in ((embedded_port, {}), (team_port, {"FINCH_DATABASE_URL": url})):
        home = tmp / f"home-{port}"
        proc_env = {**env, "FINCH_HOME": str(home), "FINCH_UPSTREAM_URL": upstream, "FINCH_PORT": str(port), **extra}
        procs.append(start(["serve"], proc_env, f"http://127.0.0.1:{port}/healthz"))
    urls = {
        "direct": upstream,
        "embedded": f"http://127.0.0.1:{embedded_port}",
        "team": f"http://127.0.0.1:{team_port}",
    }
    times: dict[str, list[float]] = {name: [] for name in urls}
    try:
        with httpx.Client(timeout=30) as client:
            for i in range(n + 30):  # the first 30 warm pools and code paths
                order = list(urls.items())
                order = order[i % 3 :] + order[: i % 3]
                for name, base in order:
                    t0 = time.perf_counter()
                    response = client.post(base + "/v1/messages", json=BODY, headers=HEADERS)
                    assert response.status_code == 200, response.text
                    if i >= 30:
                        times[name].append((time.perf_counter() - t0) * 1000)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    report = {name: {"p50": pct(v, 0.5), "p99": pct(v, 0.99)} for name, v in times.items()}
    report["team_added_ms"] = {q: report["team"][q] - report["embedded"][q] for q in ("p50", "p99")}
    report["embedded_added_ms"] = {q: report["embedded"][q] - report["direct"][q] for q in ("p50", "p99")}
    return report


def corpus(questions: int) -> list[tuple[str, str]]:
    cities = ["Paris", "Rome", "Madrid", "Berlin", "Vienna", "Lisbon", "Prague", "Dublin", "Oslo", "Athens"]
    return [
        (f"What are the opening hours of the {cities[i % 10]} office, branch {i}?",
         f"The {cities[i % 10]} office, branch {i}, opens at {8 + i % 3} and closes at {16 + i % 4}.")
        for i in range(questions)
    ]  # fmt: skip


def propagation(url: str, questions: int, tmp: Path) -> dict:
    qa = corpus(questions)
    teacher = ServerThread(build_teacher_app(Teacher(Corpus(qa)))).start()
    home = tmp / "shared-home"
    settings = {"home": str(home), "upstream_url": teacher.url, "database_url": url, "isolation": "none", **LEARN}
    apps = [build_app(load_settings(settings, environ={})) for _ in range(2)]
    replicas = [ServerThread(app).start() for app in apps]
    loops = [app.state.proxy.learning for app in apps]
    clients = [anthropic.Anthropic(base_url=r.url, api_key="bench-key-team-0001", max_retries=0) for r in replicas]
    published: dict[int, float] = {}
    seen: list[dict[int, float]] = [{}, {}]
    stop = threading.Event()

    def watch() -> None:
        last = None
        path = home / "models" / "serving.safetensors"
        while not stop.wait(0.001):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if (st.st_ino, st.st_mtime_ns) != last:
                header = read_published(home)
                if header is not None:
                    published.setdefault(header["generation"], st.st_mtime_ns / 1e9)
                    last = (st.st_ino, st.st_mtime_ns)
            for i, loop in enumerate(loops):
                serving = loop.serving
                if serving is not None:
                    seen[i].setdefault(serving.generation, time.time())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with psycopg.connect(url, autocommit=True) as conn:
        wal_before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    sent, rounds, started = 0, 0, time.perf_counter()
    try:
        for rounds in range(1, 61):
            routes = []
            for i, (question, _) in enumerate(qa):
                raw = clients[(i + rounds) % 2].messages.with_raw_response.create(
                    model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": question}]
                )
                routes.append(raw.headers["x-finch-source"])
                sent += 1
            for loop in loops:
                assert loop.drain(300)
            if all(route == "local" for route in routes):
                break
        learned_s = time.perf_counter() - started
        time.sleep(1.0)
        with psycopg.connect(url, autocommit=True) as conn:
            wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (wal_before,)).fetchone()[0]
            rows = {
                t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("requests", "examples", "learning")
            }
            table_bytes = conn.execute(
                "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
            ).fetchone()[0]
        marks = []
        for question, _ in qa:
            raw = clients[0].messages.with_raw_response.create(
                model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": question}]
            )
            if raw.headers["x-finch-source"] != "local":
                continue
            conversation = Conversation("", (("user", question),))
            assert loops[1].decide_now(conversation, 100).route == "local"
            t0 = time.perf_counter()
            httpx.post(
                replicas[0].url + "/finch/feedback",
                json={"request_id": raw.headers["x-finch-request-id"], "good": False},
            )
            while loops[1].decide_now(conversation, 100).route == "local" and time.perf_counter() - t0 < 10:
                time.sleep(0.002)
            marks.append((time.perf_counter() - t0) * 1000)
    finally:
        stop.set()
        watcher.join(5)
        for server in (*replicas, teacher):
            server.stop()
    delays = [seen[i][g] - t for g, t in published.items() for i in (0, 1) if g in seen[i]]
    both = [g for g in published if g in seen[0] and g in seen[1]]
    snapshot_bytes = (home / "models" / "serving.safetensors").stat().st_size
    return {
        "questions": questions,
        "rounds": rounds,
        "requests": sent,
        "learned_s": learned_s,
        "generations_published": len(published),
        "generations_served_by_both": len(both),
        "publish_to_serving_ms": {
            "p50": 1000 * pct(delays, 0.5), "p99": 1000 * pct(delays, 0.99), "max": 1000 * max(delays),
        } if delays else None,
        "mark_to_other_replica_ms": {
            "n": len(marks), "p50": pct(marks, 0.5), "max": max(marks),
        } if marks else None,
        "per_1000_requests": {
            "wal_bytes": 1000 * int(wal) / sent,
            "rows": {t: 1000 * n / sent for t, n in rows.items()},
            "table_bytes": 1000 * int(table_bytes) / sent,
        },
        "snapshot_bytes": snapshot_bytes,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cluster = Cluster()
    try:
        cluster.start()
        with tempfile.TemporaryDirectory() as tmp:
            report = {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "latency_ms": latency(cluster.database("latency"), args.requests, Path(tmp)),
                "propagation": propagation(cluster.database("propagation"), args.questions, Path(tmp)),
            }
    finally:
        cluster.run("destroy")
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
