"""Streaming singles and coincidence counting with per-channel delays, accidentals and gaps.

Conventions: ``window_ps`` is the full width of the coincidence window (pairs with |Δt'| ≤ window/2
count, Δt' the delay-corrected time difference), so accidentals ≈ R_a R_b window. A tag's corrected
time is ``t - delay[channel]``. Accidentals are counted in a window of the same width shifted by
``accidentals_offset_ps`` (t'_b - t'_a ≈ offset, for channel a listed before b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qlab.stream.kernels import LUT_OFFSET, LUT_SIZE, coincidence_events, count_chunk, count_chunk_offset
from qlab.types import TagChunk


def channel_lut(channels: list[int]) -> np.ndarray:
    lut = np.full(LUT_SIZE, -1, np.int64)
    for i, ch in enumerate(channels):
        if not -LUT_OFFSET <= ch < LUT_SIZE - LUT_OFFSET:
            raise ValueError(f"channel {ch} outside the supported range [-256, 255]")
        lut[ch + LUT_OFFSET] = i
    return lut


@dataclass
class CoincidenceResult:
    """Counts over one interval. Matrices are indexed by position in ``channels`` with a <= b."""

    channels: list[int]
    singles: np.ndarray
    coincidences: np.ndarray
    accidentals: np.ndarray
    duration_s: float = 0.0
    exposure_s: float = 0.0
    window_ps: int = 0
    accidentals_offset_ps: int = 0
    events: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def _ab(self, a: int, b: int) -> tuple[int, int]:
        i, j = self.channels.index(a), self.channels.index(b)
        return (i, j) if i <= j else (j, i)

    def pair(self, a: int, b: int) -> int:
        """Coincidences between channels a and b (channel numbers)."""
        return int(self.coincidences[self._ab(a, b)])

    def accidental_pair(self, a: int, b: int) -> int:
        return int(self.accidentals[self._ab(a, b)])

    def single(self, ch: int) -> int:
        return int(self.singles[self.channels.index(ch)])

    def rate(self, ch: int) -> float:
        return self.single(ch) / self.exposure_s if self.exposure_s > 0 else 0.0

    def merge(self, other: CoincidenceResult) -> CoincidenceResult:
        events = self.events
        if other.events is not None:
            events = other.events if events is None else tuple(
                np.concatenate([x, y]) for x, y in zip(events, other.events, strict=True))
        return CoincidenceResult(self.channels, self.singles + other.singles,
                                 self.coincidences + other.coincidences, self.accidentals + other.accidentals,
                                 self.duration_s + other.duration_s, self.exposure_s + other.exposure_s,
                                 self.window_ps, self.accidentals_offset_ps, events)


class CoincidenceCounter:
    """Feed chunks in time order; each ``process`` returns that chunk's counts (``total`` accumulates).

    Splitting a stream anywhere gives exactly the counts of processing it whole.
    """

    def __init__(self, channels: list[int], window_ps: int, delays_ps: dict[int, int] | None = None,
                 accidentals_offset_ps: int = 0, keep_events: bool = False):
        if window_ps <= 0:
            raise ValueError(f"window_ps must be positive, got {window_ps}")
        self.channels = list(channels)
        self.window_ps = int(window_ps)
        self.half = self.window_ps // 2
        self.acc_off = int(accidentals_offset_ps)
        if self.acc_off and abs(self.acc_off) <= self.window_ps:
            raise ValueError("accidentals_offset_ps must be well outside the coincidence window")
        self.keep_events = keep_events
        self.lut = channel_lut(self.channels)
        self.set_delays(delays_ps or {})
        self.reset()

    def set_delays(self, delays_ps: dict[int, int]) -> None:
        self.delays_ps = {ch: int(delays_ps.get(ch, 0)) for ch in self.channels}
        self.delay = np.array([self.delays_ps[ch] for ch in self.channels], np.int64)
        spread = int(self.delay.max() - self.delay.min()) if self.delay.size else 0
        self.near_scan = self.half + spread  # raw-time reach of a true coincidence
        # Accidental pairs sit in a raw-time band around |offset|, counted by their own pass.
        self.far_lo = max(0, abs(self.acc_off) - self.half - spread)
        self.far_hi = abs(self.acc_off) + self.half + spread
        self.scan = self.far_hi if self.acc_off else self.near_scan  # how much tail the next chunk needs

    def reset(self) -> None:
        n = len(self.channels)
        self.total = self._empty()
        self._tail_t = np.zeros(0, np.int64)
        self._tail_c = np.zeros(0, np.int16)
        self._n = n

    def _empty(self) -> CoincidenceResult:
        n = len(self.channels)
        return CoincidenceResult(self.channels, np.zeros(n, np.int64), np.zeros((n, n), np.int64),
                                 np.zeros((n, n), np.int64), window_ps=self.window_ps,
                                 accidentals_offset_ps=self.acc_off)

    def process(self, chunk: TagChunk) -> CoincidenceResult:
        res = self._empty()
        res.duration_s, res.exposure_s = chunk.duration_s, chunk.exposure_s
        t = np.ascontiguousarray(chunk.timestamps, np.int64)
        c = np.ascontiguousarray(chunk.channels, np.int16)
        # Split at gaps: no pair may span a gap, and tags inside a gap are not counted.
        bounds = [(None, None)]
        if len(chunk.gaps):
            bounds = []
            start = None
            for g0, g1 in chunk.gaps:
                bounds.append((start, int(g0)))
                start = int(g1)
            bounds.append((start, None))
        ev_parts = []
        for lo, hi in bounds:
            i0 = 0 if lo is None else int(np.searchsorted(t, lo, "left"))
            i1 = t.size if hi is None else int(np.searchsorted(t, hi, "left"))
            if lo is not None:
                self._tail_t, self._tail_c = self._tail_t[:0], self._tail_c[:0]
            seg_t, seg_c = t[i0:i1], c[i0:i1]
            if self.acc_off:
                count_chunk_offset(self._tail_t, self._tail_c, seg_t, seg_c, self.lut, self.delay, self.half,
                                   self.acc_off, self.near_scan, self.far_lo, self.far_hi, res.singles,
                                   res.coincidences, res.accidentals)
            else:
                count_chunk(self._tail_t, self._tail_c, seg_t, seg_c, self.lut, self.delay, self.half, 0,
                            self.near_scan, res.singles, res.coincidences, res.accidentals)
            if self.keep_events:
                ev_parts.append(self._events(seg_t, seg_c))
            self._update_tail(seg_t, seg_c)
        if self.keep_events:
            res.events = tuple(np.concatenate(p) for p in zip(*ev_parts, strict=True))
        self.total = self.total.merge(res)
        return res

    def _events(self, t: np.ndarray, c: np.ndarray):
        cap = max(1024, t.size // 2)
        while True:
            out_t = np.empty(cap, np.int64)
            out_a = np.empty(cap, np.int16)
            out_b = np.empty(cap, np.int16)
            m = coincidence_events(self._tail_t, self._tail_c, t, c, self.lut, self.delay, self.half,
                                   self.half + int(self.delay.max() - self.delay.min()), out_t, out_a, out_b)
            if m >= 0:
                return out_t[:m], out_a[:m], out_b[:m]
            cap *= 4

    def _update_tail(self, t: np.ndarray, c: np.ndarray) -> None:
        if t.size == 0:
            return
        cut = int(np.searchsorted(t, t[-1] - self.scan, "left"))
        if cut == 0 and self._tail_t.size:
            # The whole segment is within reach of the next one: keep the old tail too.
            keep = int(np.searchsorted(self._tail_t, t[-1] - self.scan, "left"))
            self._tail_t = np.concatenate([self._tail_t[keep:], t])
            self._tail_c = np.concatenate([self._tail_c[keep:], c])
        else:
            self._tail_t, self._tail_c = t[cut:].copy(), c[cut:].copy()


def count(chunk: TagChunk, channels: list[int], window_ps: int, delays_ps: dict[int, int] | None = None,
          accidentals_offset_ps: int = 0, keep_events: bool = False) -> CoincidenceResult:
    """One-shot counting of a whole chunk."""
    return CoincidenceCounter(channels, window_ps, delays_ps, accidentals_offset_ps, keep_events).process(chunk)


class NFoldCounter:
    """n-fold coincidences: an event of a group's first channel (the anchor) whose window holds at least one
    tag of every other channel of the group. Streaming and exact across chunk boundaries: an anchor is
    counted once every partner's window around it is complete, later anchors wait for the next chunk.
    Times are delay-corrected (t - delay[channel]); the window is the full width around the anchor.
    """

    def __init__(self, groups: list[list[int]], window_ps: int, delays_ps: dict[int, int] | None = None):
        if any(len(g) < 2 for g in groups):
            raise ValueError("an n-fold group needs at least two channels")
        self.groups = [list(g) for g in groups]
        self.half = int(window_ps) // 2
        self.delays = dict(delays_ps or {})
        self._tags: dict[int, np.ndarray] = {c: np.zeros(0, np.int64) for g in groups for c in g[1:]}
        self._anchors: list[np.ndarray] = [np.zeros(0, np.int64) for _ in groups]
        all_delays = [self.delays.get(c, 0) for g in groups for c in g]  # channels without a delay have 0
        self._max_delay = max(all_delays)
        self._margin = self.half + max(all_delays) - min(all_delays)
        self.counts = np.zeros(len(groups), np.int64)

    def _corrected(self, chunk: TagChunk, c: int) -> np.ndarray:
        return np.sort(chunk.timestamps[chunk.channels == c] - self.delays.get(c, 0))

    def process(self, chunk: TagChunk, final: bool = False) -> np.ndarray:
        """Add a chunk; returns the n-fold counts completed by it (per group). ``final`` flushes all anchors."""
        for c in self._tags:
            self._tags[c] = np.concatenate([self._tags[c], self._corrected(chunk, c)])
        for gi, g in enumerate(self.groups):
            self._anchors[gi] = np.concatenate([self._anchors[gi], self._corrected(chunk, g[0])])
        if final:
            horizon = np.iinfo(np.int64).max // 2
        elif len(chunk):
            # Corrected tags below this can no longer gain partners from later raw tags.
            horizon = int(chunk.timestamps[-1]) - self._margin - self._max_delay
        else:
            return np.zeros(len(self.groups), np.int64)
        new = np.zeros(len(self.groups), np.int64)
        for gi, group in enumerate(self.groups):
            anchors = self._anchors[gi]
            done = anchors + self.half < horizon
            ready = anchors[done]
            ok = np.ones(ready.size, bool)
            for c in group[1:]:
                t = np.sort(self._tags[c])
                if t.size == 0:
                    ok[:] = False
                    continue
                i = np.searchsorted(t, ready - self.half, "left")
                ok &= (i < t.size) & (t[np.minimum(i, t.size - 1)] <= ready + self.half)
            new[gi] = int(np.count_nonzero(ok))
            self._anchors[gi] = anchors[~done]
        oldest = min((a.min() for a in self._anchors if a.size), default=horizon)
        for c, t in self._tags.items():
            self._tags[c] = t[t >= min(oldest, horizon) - self.half]  # partners a pending anchor may still use
        self.counts += new
        return new
