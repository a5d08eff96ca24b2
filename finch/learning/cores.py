"""The trainer's claim on the CPU: its priority, and how many cores the rest of the machine leaves
it (as many threads as its matrix products should use)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def lower_priority(nice: int) -> None:
    """Niceness up to ``nice`` (only root may go down). At 19 on Linux, also the idle scheduling
    class, the lowest there is: a request's thread that wakes takes the CPU from it at once, where
    it would first wait out a nice-19 process's time slice (measured under load: the trainer's
    cost to forwarded requests fell from +8.4 to +4.5 ms at the median, BENCHMARKS.md "Load")."""
    os.nice(max(0, nice - os.nice(0)))
    if nice == 19 and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class FreeCores:
    """How many cores the rest of the machine left idle since the last look: as many threads as
    the trainer's matrix products should use. On a busy machine one thread is far faster than
    several: a thread the scheduler parks holds up the others at every product (measured, small
    preset, nice 19, beside two CPU-bound programs: 0.35 s an event with one thread, 0.89 s with
    two; on an idle machine, 0.22 s and 0.13 s)."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self._last = self._sample()

    def free(self) -> int:
        now = self._sample()
        if now is None or self._last is None:
            self._last = now
            return self.cores
        busy = (now[0] - self._last[0]) - (now[2] - self._last[2])  # every process's busy time but ours
        wall = now[1] - self._last[1]
        self._last = now
        others = busy / wall if wall > 0 else 0.0
        return max(1, min(self.cores, round(self.cores - others)))

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        """(the machine's busy CPU seconds, wall seconds, this process's CPU seconds); None off Linux."""
        try:
            fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle and iowait
        own = os.times()
        return (sum(fields[:8]) - idle) / tick, time.monotonic(), own.user + own.system
