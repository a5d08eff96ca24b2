"""Serving benchmark: what finch adds on the forward path, measured against a direct call.

One run starts the teacher simulator and finch as separate processes on loopback, then measures,
alternating direct and proxied calls so both see the same machine state:

  1. non-streaming latency, sequential: p50/p95 direct and through finch, and the added time
  2. streaming time to first byte (response headers) and to the first text delta
  3. requests/s with C concurrent clients, direct and through finch, in alternating rounds; the
     ratio is the median of the rounds' ratios (the direct rate alone drifts by half between runs
     minutes apart on a shared machine)

Usage: python benchmarks/serving.py [--requests 400] [--concurrency 16] [--seconds 4] [--rounds 5]
       [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from finch.server.runner import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import start  # noqa: E402

BODY = {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello"}]}
HEADERS = {"x-api-key": "bench-key", "anthropic-version": "2023-06-01"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sequential_latency(client: httpx.AsyncClient, urls: dict[str, str], n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in urls}
    for i in range(n):
        order = list(urls.items()) if i % 2 == 0 else list(reversed(urls.items()))
        for name, url in order:
            t0 = time.perf_counter()
            response = await client.post(url + "/v1/messages", json=BODY, headers=HEADERS)
            assert response.status_code == 200, response.text
            times[name].append((time.perf_counter() - t0) * 1000)
    return times


async def streaming_first_byte(client: httpx.AsyncClient, urls: dict[str, str], n: int) -> dict[str, dict]:
    result = {name: {"headers": [], "first_delta": [], "total": []} for name in urls}
    body = {**BODY, "stream": True}
    for i in range(n):
        order = list(urls.items()) if i % 2 == 0 else list(reversed(urls.items()))
        for name, url in order:
            t0 = time.perf_counter()
            async with client.stream("POST", url + "/v1/messages", json=body, headers=HEADERS) as response:
                result[name]["headers"].append((time.perf_counter() - t0) * 1000)
                seen_delta = False
                async for chunk in response.aiter_raw():
                    if not seen_delta and b"content_block_delta" in chunk:
                        result[name]["first_delta"].append((time.perf_counter() - t0) * 1000)
                        seen_delta = True
            result[name]["total"].append((time.perf_counter() - t0) * 1000)
    return result


async def throughput(url: str, concurrency: int, seconds: float) -> tuple[float, int]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                response = await client.post(url + "/v1/messages", json=BODY, headers=HEADERS)
                assert response.status_code == 200
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - t0), done


async def measure(
    urls: dict[str, str],
    n: int,
    concurrency: int,
    seconds: float,
    rounds: int,
    delay_url: dict | None,
    finch_pid: int,
) -> dict:
    async with httpx.AsyncClient(timeout=30) as client:
        await sequential_latency(client, urls, 30)  # warm pools and code paths
        latency = await sequential_latency(client, urls, n)
        stream = await streaming_first_byte(client, urls, max(50, n // 4))
    # Rounds of direct and proxied runs, alternating which goes first; each round's ratio compares
    # two runs seconds apart, and the median of the rounds' ratios is reported.
    rps: dict[str, list[float]] = {name: [] for name in urls}
    ratios, finch_cpu_ms = [], []
    for round_ in range(rounds):
        order = list(urls.items()) if round_ % 2 == 0 else list(reversed(urls.items()))
        for name, url in order:
            cpu_before = cpu_seconds(finch_pid)
            rate, count = await throughput(url, concurrency, seconds)
            rps[name].append(rate)
            if name == "finch":
                finch_cpu_ms.append((cpu_seconds(finch_pid) - cpu_before) * 1000 / count)
        ratios.append(rps["finch"][-1] / rps["direct"][-1])
    report = {
        "latency_ms": {k: {"p50": pct(v, 0.5), "p95": pct(v, 0.95)} for k, v in latency.items()},
        "stream_ms": {k: {m: statistics.median(vals) for m, vals in v.items()} for k, v in stream.items()},
        "requests_per_s": {k: statistics.median(v) for k, v in rps.items()},
        "requests_per_s_by_round": rps,
        "finch_cpu_ms_per_request": statistics.median(finch_cpu_ms),
    }
    d, f = report["latency_ms"]["direct"], report["latency_ms"]["finch"]
    report["added_ms"] = {"p50": f["p50"] - d["p50"], "p95": f["p95"] - d["p95"]}
    sd, sf = report["stream_ms"]["direct"], report["stream_ms"]["finch"]
    report["first_byte_ratio"] = sf["headers"] / sd["headers"]
    report["first_delta_ratio"] = sf["first_delta"] / sd["first_delta"]
    report["throughput_ratio"] = statistics.median(ratios)
    if delay_url:
        async with httpx.AsyncClient(timeout=30) as client:
            slow = await streaming_first_byte(client, delay_url, 20)
        report["realistic_stream_ms"] = {k: {m: statistics.median(v2) for m, v2 in v.items()} for k, v in slow.items()}
        rs = report["realistic_stream_ms"]
        report["realistic_first_delta_ratio"] = rs["finch"]["first_delta"] / rs["direct"]["first_delta"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="each throughput run")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds, direct and through finch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-learning", action="store_true", help="finch as a recording proxy only")
    args = parser.parse_args()

    procs = []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "FINCH_HOME": home, "FINCH_LEARNING": "false" if args.no_learning else "true"}
        env.pop("ANTHROPIC_API_KEY", None)
        ports = {name: free_port() for name in ("teacher", "finch", "slow_teacher", "slow_finch")}
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        try:
            procs.append(start(["teacher", "--port", str(ports["teacher"])], env, url["teacher"] + "/_teacher/stats"))
            procs.append(
                start(
                    [
                        "serve",
                        "--port",
                        str(ports["finch"]),
                        "--upstream-url",
                        url["teacher"],
                        "--home",
                        home + "/a",
                        "--log-level",
                        "warning",
                    ],
                    env,
                    url["finch"] + "/healthz",
                )
            )
            # A teacher with Claude-like pacing: 400 ms to the first token, 10 ms per token.
            procs.append(
                start(
                    [
                        "teacher",
                        "--port",
                        str(ports["slow_teacher"]),
                        "--first-token-delay",
                        "0.4",
                        "--token-delay",
                        "0.01",
                    ],
                    env,
                    url["slow_teacher"] + "/_teacher/stats",
                )
            )
            procs.append(
                start(
                    [
                        "serve",
                        "--port",
                        str(ports["slow_finch"]),
                        "--upstream-url",
                        url["slow_teacher"],
                        "--home",
                        home + "/b",
                        "--log-level",
                        "warning",
                    ],
                    env,
                    url["slow_finch"] + "/healthz",
                )
            )
            report = asyncio.run(
                measure(
                    {"direct": url["teacher"], "finch": url["finch"]},
                    args.requests,
                    args.concurrency,
                    args.seconds,
                    args.rounds,
                    {"direct": url["slow_teacher"], "finch": url["slow_finch"]},
                    procs[1].pid,
                )
            )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=10)
    report["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    report["command"] = "python " + " ".join(sys.argv)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
