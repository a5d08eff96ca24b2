"""Starting finch's own commands as separate processes for benchmarks."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx


def start(args: list[str], env: dict[str, str], health_url: str, timeout: float = 60) -> subprocess.Popen:
    """`python -m finch ARGS`, returned once ``health_url`` answers."""
    proc = subprocess.Popen([sys.executable, "-m", "finch", *args], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(health_url, timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"`finch {args[0]}` did not start")
