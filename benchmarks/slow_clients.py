"""Slow clients: many connections trickle a request body at one byte a second while a normal client
keeps asking. Reports the normal client's latency with and without them (same run), how long finch
let each slow connection live, and finch's open file descriptors before and after.

finch runs on its default edge limits unless told otherwise: a slow body is cut off with a 408
``body_timeout`` seconds after its headers.

Usage:
  python benchmarks/slow_clients.py [--connections 500] [--body-timeout 60] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ASK = {
    "model": "claude-haiku-4-5",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "What is two plus two?"}],
}


async def trickle(host: str, port: int) -> float:
    """One slow client: headers announcing 1,000 bytes, then a byte a second until finch answers or
    closes the connection. Returns how long the connection lived after its headers."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-length: 1000\r\n\r\n")
    started = time.monotonic()
    try:
        while True:
            writer.write(b"{")
            await writer.drain()
            try:
                await asyncio.wait_for(reader.read(65536), timeout=1.0)  # a reply or end of file: cut off
                break
            except TimeoutError:
                continue
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - started


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def allow_descriptors(needed: int) -> None:
    """Client and server sockets all live in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def latencies_ms(url: str, count: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=30, headers={"x-api-key": "bench-key"}) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.post("/v1/messages", json=ASK)
            response.raise_for_status()
            out.append((time.perf_counter() - started) * 1000)
    return out


async def under_siege(host: str, port: int, url: str, connections: int, asks: int) -> tuple[list[float], list[float]]:
    slow = [asyncio.create_task(trickle(host, port)) for _ in range(connections)]
    await asyncio.sleep(2)  # all connected and trickling
    during = await asyncio.to_thread(latencies_ms, url, asks)
    return during, await asyncio.gather(*slow)


def main() -> None:
    from finch.config import load_settings
    from finch.server.app import build_app
    from finch.server.runner import ServerThread
    from finch.teacher.corpus import Corpus
    from finch.teacher.server import Teacher, TeacherConfig, build_teacher_app

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--body-timeout", type=float, help="finch's body_timeout (default: its own default)")
    parser.add_argument("--asks", type=int, default=200, help="normal requests before and during")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    allow_descriptors(4 * args.connections + 256)

    teacher = ServerThread(build_teacher_app(Teacher(Corpus([("q", "a")]), TeacherConfig(require_auth=False)))).start()
    with tempfile.TemporaryDirectory(prefix="finch-slow-") as home:
        # Learning off: this measures the edge, not the trainer sharing two cores.
        overrides = {"home": home, "upstream_url": teacher.url, "learning": False, "body_timeout": args.body_timeout}
        settings = load_settings(overrides, environ={})
        finch = ServerThread(build_app(settings), settings=settings).start()
        try:
            latencies_ms(finch.url, 20)  # warm: the upstream pool and the log are open before counting
            before_fds = open_descriptors()
            alone = latencies_ms(finch.url, args.asks)
            during, lived = asyncio.run(under_siege(finch.host, finch.port, finch.url, args.connections, args.asks))
            deadline = time.monotonic() + 10
            while open_descriptors() > before_fds and time.monotonic() < deadline:
                time.sleep(0.1)
            after_fds = open_descriptors()
        finally:
            finch.stop()
            teacher.stop()

    def p95(xs: list[float]) -> float:
        return statistics.quantiles(xs, n=20)[-1]

    report = {
        "slow_connections": args.connections,
        "body_timeout_s": settings.body_timeout,
        "normal_client_ms": {
            "alone": {"p50": statistics.median(alone), "p95": p95(alone)},
            "during": {"p50": statistics.median(during), "p95": p95(during)},
            "added_p50": statistics.median(during) - statistics.median(alone),
        },
        "slow_connection_lived_s": {"min": min(lived), "max": max(lived)},
        "open_descriptors": {"before": before_fds, "after": after_fds},
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "slow_clients.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
