"""A node's recent clicks (its own tagger time) and the clock model between the two nodes' taggers.

``ClickBuffer`` keeps the last ``retention_s`` of one node's clicks (ports 0..3 = H, V, D, A) as its tagger
reader appends them. ``LinkClock`` is Alice's model of ``t_bob − t_alice`` as a function of Alice's tagger
time: acquired once per session from a published subset of Bob's tags (``qlab.stream.clocksync``'s FFT
cross-correlation and line fit) and tracked block by block (``ClockTracker``) from the event times Bob
publishes in BBM92 sifting anyway. Times in ps.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from qlab.stream.clocksync import ClockSync, ClockTracker, find_clock_offset
from qlab.stream.kernels import pairs_within
from qlab.types import TagChunk


class ClickBuffer:
    """Thread-safe rolling buffer of (time ps, port) in one tagger's time."""

    def __init__(self, retention_s: float):
        self.retention_ps = int(retention_s * 1e12)
        self._lock = threading.Lock()
        self._t: list[np.ndarray] = []
        self._p: list[np.ndarray] = []
        self.covered_ps = -1  # tagger time up to which the stream has been read
        self.start_ps = -1  # earliest tagger time still held
        self.total_clicks = 0
        self.counts_by_port = np.zeros(4, np.int64)

    def append(self, times: np.ndarray, ports: np.ndarray, t_stop_ps: int, t_start_ps: int) -> None:
        with self._lock:
            if self.start_ps < 0:
                self.start_ps = t_start_ps
            if times.size:
                self._t.append(times)
                self._p.append(ports)
                self.total_clicks += int(times.size)
                self.counts_by_port += np.bincount(ports, minlength=4)[:4]
            self.covered_ps = max(self.covered_ps, t_stop_ps)
            cut = self.covered_ps - self.retention_ps
            if cut > self.start_ps:
                while self._t and (self._t[0].size == 0 or self._t[0][-1] < cut):
                    self._t.pop(0)
                    self._p.pop(0)
                self.start_ps = cut

    def span(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Clicks with t0 ≤ t < t1 (time-sorted)."""
        with self._lock:
            if not self._t:
                return np.zeros(0, np.int64), np.zeros(0, np.uint8)
            t = np.concatenate(self._t)
            p = np.concatenate(self._p)
        i0, i1 = np.searchsorted(t, [t0, t1], side="left")
        return t[i0:i1], p[i0:i1]


@dataclass
class ClockEstimate:
    """What a node reports about the link's clocks (never the emulator's truth)."""

    offset_ps: float  # t_bob − t_alice at Alice tagger time ``at_alice_ps``
    at_alice_ps: float
    drift_ppm: float
    residual_ps: float | None  # last tracker residual
    pairs: int


class LinkClock:
    """Alice's model of t_bob − t_alice(t_alice)."""

    def __init__(self, sync: ClockSync, window_ps: float):
        self.sync = sync
        # Gain 1: each block has ~1e5 pairs, so its median residual (± a few ps) is trusted fully; a softer servo
        # would lag the drift by tens of ps over 20 s blocks.
        self.tracker = ClockTracker(sync, window_ps=1.5 * window_ps, gain=1.0)
        self.last_residual_ps: float | None = None
        self.last_t_ps = 0.0
        self.pairs = sync.pairs

    @staticmethod
    def acquire(alice_t: np.ndarray, bob_t: np.ndarray, window_ps: float) -> LinkClock:
        """From Alice's clicks and the subset of Bob's published for synchronisation (raw tagger times).
        Raises AnalysisError when no correlation peak is found."""
        sync = find_clock_offset(TagChunk(alice_t, np.zeros(alice_t.size, np.int16), 0, 0),
                                 TagChunk(bob_t, np.zeros(bob_t.size, np.int16), 0, 0), window_ps=window_ps)
        clock = LinkClock(sync, window_ps)
        clock.last_t_ps = float(alice_t[-1]) if alice_t.size else 0.0
        return clock

    def model(self, t_alice_ps: np.ndarray | float) -> np.ndarray | float:
        return self.tracker.model(t_alice_ps)

    def to_bob(self, t_alice: np.ndarray) -> np.ndarray:
        """Alice's times in Bob's tagger frame."""
        return np.round(t_alice + self.model(t_alice.astype(np.float64))).astype(np.int64)

    def update(self, alice_t: np.ndarray, bob_t: np.ndarray) -> float | None:
        """Track with this block's times (Alice's clicks, Bob's published event times): the tracker's servo step
        (its median residual is returned, ps; None with too few pairs), then a line fit of offset and drift over
        every pair of the block. The fit matters: the drift from a 1.5 s acquisition is known to ~1e-5 ppm, which
        is already ~100 ps over a 20 s block, while a block's ~1e5 pairs fix it to ~1e-7 ppm."""
        z = np.zeros(0, np.int16)
        r = self.tracker.update(TagChunk(alice_t, z, 0, 0), TagChunk(bob_t, z, 0, 0))
        if r is None:
            return None
        self.last_residual_ps = r
        self.last_t_ps = float(alice_t[-1])
        self._fit_line(alice_t, bob_t)
        return r

    def _fit_line(self, alice_t: np.ndarray, bob_t: np.ndarray) -> None:
        tr = self.tracker
        ends = [tr.model(float(alice_t[0])), tr.model(float(alice_t[-1]))]
        half = tr.window_ps / 2
        lo, hi = int(np.floor(min(ends) - 2 * half)), int(np.ceil(max(ends) + 2 * half))
        out_i, out_j = pairs_within(alice_t, bob_t, lo, hi)
        t = alice_t[out_i].astype(np.float64)
        resid = (bob_t[out_j] - alice_t[out_i]).astype(np.float64) - tr.model(t)
        near = np.abs(resid) <= half
        if near.sum() < 100 or np.ptp(t[near]) < 1e12:
            return
        t_mid = float(np.median(t[near]))
        slope, icpt = np.polyfit(t[near] - t_mid, resid[near], 1)
        tr.value = tr.model(t_mid) + float(icpt)
        tr.drift_ppm += float(slope) * 1e6
        tr.t_anchor = t_mid
        self.pairs = int(near.sum())

    def estimate(self) -> ClockEstimate:
        t = self.last_t_ps
        return ClockEstimate(float(self.model(t)), t, self.tracker.drift_ppm, self.last_residual_ps, self.pairs)
