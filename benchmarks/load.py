"""Load benchmark: many concurrent clients, mixed streaming and non-streaming, for a fixed time,
against a teacher with Claude-like pacing; once directly and once through finch (learning on).

Reports errors (finch must add none), latency p50/p95 direct and through finch, finch's memory over
the run (RSS sampled every few seconds), and how many learning events the trainer shed.

Usage: python benchmarks/load.py [--clients 64] [--seconds 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx

from finch.server.runner import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import start  # noqa: E402

QUESTIONS = ["Hello", "What is your name?", "Do you like music?", "What is AI?", "Tell me a joke", "How are you?"]
HEADERS = {"x-api-key": "load-key", "anthropic-version": "2023-06-01"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def drive(url: str, clients: int, seconds: float, pid: int | None) -> dict:
    latencies: list[float] = []
    by_source: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    memory: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    started = time.perf_counter()
    deadline = started + seconds

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
            i = k
            while time.perf_counter() < deadline:
                body = {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 200,
                    "stream": i % 2 == 0,
                    "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                }
                t0 = time.perf_counter()
                source = "error"
                try:
                    async with http.stream("POST", "/v1/messages", json=body, headers=HEADERS) as response:
                        raw = b"".join([chunk async for chunk in response.aiter_raw()])
                    source = response.headers.get("x-finch-source", "direct")
                    ok = response.status_code == 200 and (b"message_stop" in raw or b'"stop_reason"' in raw)
                    if not ok:
                        errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                latencies.append(time.perf_counter() - t0)
                by_source.setdefault(source, []).append(time.perf_counter() - t0)
                i += clients

    async def sample_memory() -> None:
        while pid is not None and time.perf_counter() < deadline:
            memory.append((time.perf_counter() - started, rss_mb(pid)))
            await asyncio.sleep(5)

    await asyncio.gather(sample_memory(), *(client(k) for k in range(clients)))
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "by_source": {
            k: {
                "requests": len(v),
                "p50_ms": sorted(v)[len(v) // 2] * 1000,
                "p95_ms": sorted(v)[int(len(v) * 0.95)] * 1000,
            }
            for k, v in by_source.items()
        },
        "errors": errors,
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p95_ms": ordered[int(len(ordered) * 0.95)] * 1000,
        "memory_mb": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-learning", action="store_true", help="finch as a recording proxy only")
    args = parser.parse_args()
    procs = []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "FINCH_HOME": home, "FINCH_PRESET": args.preset}
        env["FINCH_LEARNING"] = "false" if args.no_learning else "true"
        teacher_port, finch_port = free_port(), free_port()
        teacher_url, finch_url = f"http://127.0.0.1:{teacher_port}", f"http://127.0.0.1:{finch_port}"
        try:
            procs.append(
                start(
                    ["teacher", "--port", str(teacher_port), "--first-token-delay", "0.3", "--token-delay", "0.01"],
                    env,
                    teacher_url + "/_teacher/stats",
                )
            )
            procs.append(
                start(
                    ["serve", "--port", str(finch_port), "--upstream-url", teacher_url, "--log-level", "warning"],
                    env,
                    finch_url + "/healthz",
                )
            )
            direct = asyncio.run(drive(teacher_url, args.clients, args.seconds, None))
            proxied = asyncio.run(drive(finch_url, args.clients, args.seconds, procs[1].pid))
            stats = httpx.get(finch_url + "/finch/stats").json()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    memory = proxied.pop("memory_mb")
    report = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "clients": args.clients,
        "seconds": args.seconds,
        "direct": direct | {"memory_mb": None},
        "finch": proxied,
        # Forwarded requests only: local answers skip the upstream and would flatter finch.
        "added_p50_ms": proxied["by_source"]["upstream"]["p50_ms"] - direct["p50_ms"],
        "added_p95_ms": proxied["by_source"]["upstream"]["p95_ms"] - direct["p95_ms"],
        "finch_rss_mb": {"first": memory[0][1], "middle": memory[len(memory) // 2][1], "last": memory[-1][1]},
        # Warm-up fills replay buffers, the retrieval memory and allocator pools; growth that goes
        # on in the second half would be a leak.
        "finch_rss_second_half_growth_mb": memory[-1][1] - memory[len(memory) // 2][1],
        "finch_rss_series": [(round(t), round(mb)) for t, mb in memory],
        "learning_events_shed": (stats["learning"] or {}).get("learning_dropped"),
        "learned": (stats["learning"] or {}).get("learned"),
        "log_rows_dropped": stats["log_dropped"],
    }
    report["direct"].pop("memory_mb")
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
