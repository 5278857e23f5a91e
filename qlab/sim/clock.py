"""Simulated time: as fast as the computer allows (scripts, tests) or following the wall clock (GUI)."""

from __future__ import annotations

import threading
import time


class SimClock:
    """Seconds of simulated time. In fast mode time only moves when someone sleeps or waits on it,
    so a 2 s integration or a 1 s rotation costs simulated, not wall, seconds."""

    def __init__(self, realtime: bool = False):
        self.realtime = realtime
        self._t = 0.0
        self._wall0 = time.monotonic()
        self._lock = threading.Lock()

    def now(self) -> float:
        if self.realtime:
            return time.monotonic() - self._wall0
        with self._lock:
            return self._t

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.realtime:
            time.sleep(seconds)
            return
        with self._lock:
            self._t += seconds

    def advance_to(self, t: float) -> None:
        """Fast mode: jump forward to ``t`` (never backwards). Realtime: wait until then."""
        if self.realtime:
            self.sleep(t - self.now())
            return
        with self._lock:
            self._t = max(self._t, t)
