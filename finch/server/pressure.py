"""Pressure: whether requests need the CPU, read from the server's event loop.

Loop lag is how late the server's loop runs a timer it set. When it runs late with requests in
flight, the forward path is short of CPU (the local models and the relay share it): requests then
forward without a local attempt. (The trainer needs no such signal: it is a process of its own at a
low CPU priority, and the operating system hands requests the CPU first.)
"""

from __future__ import annotations

import asyncio


class Pressure:
    def __init__(self, interval_s: float = 0.02, busy_ms: float = 2.0, smoothing: float = 0.3) -> None:
        self.interval_s = interval_s
        self.busy_ms = busy_ms  # measured: an idle loop runs its timers well under a millisecond late
        self.smoothing = smoothing
        self.lag_ms = 0.0  # exponential moving average; written by the loop, read from any thread
        self.in_flight = 0  # /v1/ requests being answered; written by the loop only

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval_s)
            late_ms = max(0.0, (loop.time() - started - self.interval_s) * 1000)
            self.lag_ms += self.smoothing * (late_ms - self.lag_ms)

    def busy(self, others: int = 0) -> bool:
        """Is the loop late while more than ``others`` requests are in flight?"""
        return self.in_flight > others and self.lag_ms > self.busy_ms
