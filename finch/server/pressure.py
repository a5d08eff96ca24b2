"""Pressure: whether requests need the CPU, read from the server's event loop and the machine.

Loop lag is how late the server's loop runs a timer it set. When it runs late with requests in
flight, the forward path is short of CPU (the models, the trainer and the relay share it, and the
trainer's Python holds the GIL): requests then forward without a local attempt. The trainer asks
more: it waits while requests are in flight and either the loop runs late or the machine has
little idle CPU left (the clients and, in tests and benchmarks, the upstream share the machine, and
the trainer's CPU is theirs to lose), and the queue sheds what piles up meanwhile. Requests first.
"""

from __future__ import annotations

import asyncio
from collections import deque

import psutil

_NOT_IDLE_FIELDS = ("guest", "guest_nice")  # Linux counts guest time in user time too


def idle_seconds() -> tuple[float, float]:
    """(idle, total) CPU seconds of the whole machine so far, over all cores."""
    times = psutil.cpu_times()._asdict()
    total = sum(v for k, v in times.items() if k not in _NOT_IDLE_FIELDS)
    return times["idle"] + times.get("iowait", 0.0), total


class Pressure:
    def __init__(
        self,
        interval_s: float = 0.02,
        busy_ms: float = 2.0,
        smoothing: float = 0.3,
        quiet_ticks: int = 3,
        window_ticks: int = 5,
        min_idle: float = 0.5,
    ) -> None:
        self.interval_s = interval_s
        self.busy_ms = busy_ms  # measured: an idle loop runs its timers well under a millisecond late
        self.smoothing = smoothing
        self.window_ticks = window_ticks  # machine idle share is measured over this many ticks
        self.min_idle = min_idle  # the share of the machine's CPU that must be idle for background work
        self.lag_ms = 0.0  # exponential moving average; written by the loop, read from any thread
        self.idle_share = 1.0  # over the last whole window; written by the loop, read from any thread
        self.in_flight = 0  # /v1/ requests being answered; written by the loop only
        self._recent: deque[float] = deque([0.0] * quiet_ticks, maxlen=quiet_ticks)  # raw, newest last

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        ticks = 0
        window_start = idle_seconds()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval_s)
            late_ms = max(0.0, (loop.time() - started - self.interval_s) * 1000)
            self._recent.append(late_ms)
            self.lag_ms += self.smoothing * (late_ms - self.lag_ms)
            ticks += 1
            if ticks % self.window_ticks == 0:
                now = idle_seconds()
                elapsed = now[1] - window_start[1]
                if elapsed > 0:
                    self.idle_share = (now[0] - window_start[0]) / elapsed
                window_start = now

    def busy(self, others: int = 0) -> bool:
        """Is the loop late while more than ``others`` requests are in flight?"""
        return self.in_flight > others and self.lag_ms > self.busy_ms

    def quiet(self) -> bool:
        """May background work run now? Yes with no request in flight; otherwise only when the loop
        ran its last few timers on time and the machine was mostly idle over the last window. Both
        are judged on the latest ticks, not an average: background work makes the loop late and the
        machine busy itself, and once it stops, a few ticks show whether requests still need the CPU.
        """
        if self.in_flight == 0:
            return True
        return max(self._recent) <= self.busy_ms and self.idle_share >= self.min_idle
