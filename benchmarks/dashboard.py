"""The dashboard's data endpoint on a large request log: is the page still quick to refresh?

Fills a fresh finch home's log with N requests spread over 30 days (a fifth of them answered
locally, with their question and answer; learning rows with audits and the operating point), starts
`finch serve` on it as its own process, and times GET /finch/dashboard.json, which the page polls
every two seconds. Goal: p50 under 200 ms at 100,000 rows.

Usage: python benchmarks/dashboard.py [--rows 100000] [--requests 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from finch.conversation import Conversation
from finch.server.runner import free_port
from finch.store.db import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import start  # noqa: E402

DAYS = 30


def fill(db: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    now = time.time()
    conn = connect(db)
    requests, answers, learning = [], [], []
    for i in range(rows):
        ts = now - DAYS * 86400 * (1 - i / rows)
        local = rng.random() < 0.2
        rid = f"req_finch_{i:012x}"
        requests.append(
            (rid, ts, "POST", "/v1/messages", "claude-haiku-4-5", 0, "local" if local else "forward",
             "local" if local else "validator_reject", 200, rng.uniform(1, 900), 0.0,
             rng.randint(5, 400), rng.randint(5, 400), 0.0 if local else 0.0004, 0.0004 if local else 0.0)
        )  # fmt: skip
        if local:
            conversation = Conversation("", (("user", f"question {i % 500}?"),)).to_json()
            answers.append((rid, ts, conversation, f"answer {i % 500}."))
        else:
            audit = rng.random() < 0.1
            learning.append((ts, rid, "claude", int(audit), int(rng.random() > 0.01) if audit else None, 0.96))
    with conn:
        conn.executemany(
            "INSERT INTO requests (id, ts, method, path, model, stream, route, reason, status, latency_ms,"
            " ttfb_ms, input_tokens, output_tokens, cost_usd, saved_usd) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            requests,
        )
        conn.executemany("INSERT INTO local_answers VALUES (?, ?, ?, ?)", answers)
        conn.executemany(
            "INSERT INTO learning (ts, request_id, kind, audit, audit_good, threshold) VALUES (?,?,?,?,?,?)", learning
        )
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        started = time.perf_counter()
        fill(home / "finch.db", args.rows)
        filled_s = time.perf_counter() - started
        port = free_port()
        env = {**os.environ, "FINCH_HOME": str(home), "FINCH_PORT": str(port), "FINCH_PRESET": "tiny"}
        url = f"http://127.0.0.1:{port}"
        proc = start(["serve"], env, url + "/healthz")
        try:
            times = []
            for _ in range(args.requests + 3):
                t0 = time.perf_counter()
                response = httpx.get(url + "/finch/dashboard.json", timeout=30)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200 and response.json()["totals"]["requests"] == args.rows
            times = times[3:]  # the first calls warm SQLite's page cache
            size = len(response.content)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result = {
        "rows": args.rows,
        "requests": args.requests,
        "p50_ms": statistics.median(times),
        "p95_ms": sorted(times)[int(0.95 * len(times))],
        "response_bytes": size,
        "fill_s": filled_s,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
