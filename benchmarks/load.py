"""Load benchmark: many concurrent clients, mixed streaming and non-streaming, for a fixed time,
against a teacher with Claude-like pacing: directly, then through finch in each mode (learning on,
learning off), each finch a fresh process with a fresh home; the whole repeated for ``--rounds``,
the order of the modes rotating from round to round.

Reports errors (finch must add none), latency p50/p95 direct and through finch, finch's memory over
each leg (RSS of the server and the trainer's process, sampled every few seconds), and the
trainer's backlog at the end. Added
latency is taken against the same round's direct leg; the summary is the median over rounds, so
machine drift between rounds does not pass for finch's cost.

Usage: python benchmarks/load.py [--clients 64] [--seconds 60] [--rounds 3]
       [--modes learning learning-held no-learning] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
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
    """Resident memory of finch: the server and its children (the trainer's process)."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for each in [pid, *(int(c) for c in (children.read_text().split() if children.exists() else []))]:
        try:
            lines = Path(f"/proc/{each}/status").read_text().splitlines()
        except FileNotFoundError:  # a child that just exited
            continue
        total += next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:")), 0.0)
    return total


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


# Each mode's settings. "learning-held": the trainer learns everything, but the cold start never
# ends, so nothing is answered locally: what the trainer itself costs the forward path, apart from
# what local answers cost the CPU they share with it.
_NO_TRAINER = {"FINCH_LEARNING": "true", "FINCH_COLD_START": "1000000000", "FINCH_START_TRAINER": "false"}
MODES = {
    "learning": {"FINCH_LEARNING": "true"},
    "learning-held": {"FINCH_LEARNING": "true", "FINCH_COLD_START": "1000000000"},
    "no-learning": {"FINCH_LEARNING": "false"},
    # The server's side of learning alone (no trainer, so no snapshots to load): what is left.
    "learning-no-trainer": _NO_TRAINER,
    # The same beside a program in the idle scheduling class that is not finch's trainer: what any
    # such program costs the forward path. "spin" only takes idle CPU; "matmul" also keeps a core's
    # caches full of its own 12 MB; "memory" streams through 512 MB, evicting the shared cache as
    # the trainer's gigabyte of weights, optimiser state and activations does.
    "no-trainer-idle-spin": _NO_TRAINER,
    "no-trainer-idle-matmul": _NO_TRAINER,
    "no-trainer-idle-memory": _NO_TRAINER,
}
BESIDE = {
    "no-trainer-idle-spin": "while True: pass",
    "no-trainer-idle-matmul": "import numpy as np\na = np.ones((1024, 1024), np.float32)\nwhile True: a @ a",
    "no-trainer-idle-memory": "import numpy as np\na = np.ones(64 << 20)\nwhile True: a.sum()",
}


def beside(mode: str) -> subprocess.Popen | None:
    """The mode's other program, one thread, in the idle scheduling class (as finch's trainer is)."""
    if mode not in BESIDE:
        return None
    idle = lambda: os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # noqa: E731
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", BESIDE[mode]], env=env, preexec_fn=idle)


def run_finch(teacher_url: str, preset: str, mode: str, clients: int, seconds: float) -> dict:
    """One leg through a fresh finch: its latencies, memory series and learning counters."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "FINCH_HOME": home, "FINCH_PRESET": preset, **MODES[mode]}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["serve", "--port", str(port), "--upstream-url", teacher_url, "--log-level", "warning"]
        proc = start(args, env, url + "/healthz")
        other = beside(mode)
        try:
            leg = asyncio.run(drive(url, clients, seconds, proc.pid))
            stats = httpx.get(url + "/finch/stats").json()
        finally:
            for each in (other, proc):
                if each is not None:
                    each.terminate()
                    each.wait(timeout=60)
    memory = leg.pop("memory_mb")
    learning_stats = stats["learning"] or {}
    return leg | {
        "rss_mb": {"first": memory[0][1], "middle": memory[len(memory) // 2][1], "last": memory[-1][1]},
        # Warm-up fills replay buffers, the retrieval memory and allocator pools; growth that goes
        # on in the second half would be a leak.
        "rss_second_half_growth_mb": memory[-1][1] - memory[len(memory) // 2][1],
        "rss_series": [(round(t), round(mb)) for t, mb in memory],
        "trainer_backlog": learning_stats.get("trainer_backlog"),
        "learned": learning_stats.get("learned"),
        "log_rows_dropped": stats["log_dropped"],
        "by_reason": {f"{row['route']}/{row['reason']}": row["requests"] for row in stats["by_reason"]},
    }


def added(leg: dict, direct: dict) -> dict:
    """Forwarded requests only: local answers skip the upstream and would flatter finch."""
    forwarded = leg["by_source"]["upstream"]
    return {
        "added_p50_ms": forwarded["p50_ms"] - direct["p50_ms"],
        "added_p95_ms": forwarded["p95_ms"] - direct["p95_ms"],
        "throughput_ratio": leg["requests"] / direct["requests"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["learning"])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as home:
        teacher_port = free_port()
        teacher_url = f"http://127.0.0.1:{teacher_port}"
        pacing = ["--first-token-delay", "0.3", "--token-delay", "0.01"]
        teacher_env = {**os.environ, "FINCH_HOME": home}
        teacher = start(["teacher", "--port", str(teacher_port), *pacing], teacher_env, teacher_url + "/_teacher/stats")
        try:
            for r in range(args.rounds):
                direct = asyncio.run(drive(teacher_url, args.clients, args.seconds, None))
                direct.pop("memory_mb")
                legs = {"direct": direct}
                for k in range(len(args.modes)):
                    mode = args.modes[(r + k) % len(args.modes)]
                    leg = run_finch(teacher_url, args.preset, mode, args.clients, args.seconds)
                    cost = added(leg, direct)
                    legs[mode] = leg | cost
                    print(f"round {r + 1} {mode}: " + json.dumps(cost), file=sys.stderr)
                rounds.append(legs)
        finally:
            teacher.terminate()
            teacher.wait(timeout=30)
    summary = {
        mode: {
            key: statistics.median(legs[mode][key] for legs in rounds)
            for key in ("added_p50_ms", "added_p95_ms", "throughput_ratio")
        }
        | {"errors": [legs[mode]["errors"] for legs in rounds]}
        for mode in args.modes
    }
    report = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "clients": args.clients,
        "seconds": args.seconds,
        "summary": summary,
        "direct_errors": [legs["direct"]["errors"] for legs in rounds],
        "rounds": rounds,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
