"""Exact coincidence counting of one long stream in independent time segments, on several cores.

A segment is a run of tags [i0, i1) of the time-ordered stream. Each segment is counted with a tail: the
tags of the preceding ``scan`` ps (the reach of a coincidence or accidental pair, including the delay
spread), so every pair is counted exactly once, by the segment holding its later tag. Tags inside gaps
and pairs spanning a gap are excluded as in the serial pass. The sum over segments equals the serial
``CoincidenceCounter`` result for any segment length. The kernels release the GIL, so a thread pool
uses every core without copying the stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from qlab.stream.coincidence import CoincidenceCounter, CoincidenceResult
from qlab.types import TagChunk


@dataclass(frozen=True)
class CountSpec:
    """What to count: channel list, full window (ps), per-channel delays (ps), accidentals offset (ps)."""

    channels: tuple[int, ...]
    window_ps: int
    delays_ps: tuple[tuple[int, int], ...] = ()
    accidentals_offset_ps: int = 0

    def counter(self) -> CoincidenceCounter:
        return CoincidenceCounter(list(self.channels), self.window_ps, dict(self.delays_ps),
                                  self.accidentals_offset_ps)


def segment_bounds(t: np.ndarray, segment_tags: int) -> list[tuple[int, int]]:
    """Index ranges of consecutive segments of about ``segment_tags`` tags each."""
    if segment_tags <= 0:
        raise ValueError(f"segment_tags must be positive, got {segment_tags}")
    edges = list(range(0, t.size, segment_tags)) + [t.size]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _gaps_within(gaps: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Gaps overlapping the tagger-time interval [lo, hi] (ps)."""
    if not len(gaps):
        return gaps
    return gaps[(gaps[:, 1] > lo) & (gaps[:, 0] <= hi)]


def count_segment(spec: CountSpec, t: np.ndarray, c: np.ndarray, i0: int, i1: int,
                  gaps: np.ndarray) -> CoincidenceResult:
    """Counts of the pairs whose later tag is in [i0, i1), with singles of that range only."""
    counter = spec.counter()
    start = int(t[i0])
    # The tail: tags within reach before the segment, after the last gap that ends before it starts (the
    # serial pass forgets its tail at every gap).
    tail_lo = start - counter.scan
    earlier = gaps[gaps[:, 1] <= start] if len(gaps) else gaps
    if len(earlier):
        tail_lo = max(tail_lo, int(earlier[:, 1].max()))
    j = int(np.searchsorted(t[:i0], tail_lo, "left"))
    tail_t, tail_c = t[j:i0], c[j:i0]
    if len(gaps):  # a tag inside a gap never pairs
        inside = np.zeros(tail_t.size, bool)
        for g0, g1 in gaps:
            inside |= (tail_t >= g0) & (tail_t < g1)
        tail_t, tail_c = tail_t[~inside], tail_c[~inside]
    counter._tail_t = np.ascontiguousarray(tail_t, np.int64)
    counter._tail_c = np.ascontiguousarray(tail_c, np.int16)
    stop = int(t[i1 - 1])
    return counter.process(TagChunk(t[i0:i1], c[i0:i1], start, stop + 1, _gaps_within(gaps, start, stop)))


def count_parallel(chunk: TagChunk, channels: Iterable[int], window_ps: int,
                   delays_ps: dict[int, int] | None = None, accidentals_offset_ps: int = 0,
                   workers: int | None = None, segment_tags: int | None = None) -> CoincidenceResult:
    """Singles, coincidences and accidentals of ``chunk`` counted in segments on ``workers`` threads
    (default: every core). Identical to ``CoincidenceCounter(...).process(chunk)``; duration and exposure
    are the chunk's. Raises ValueError for a non-positive window or segment length."""
    spec = CountSpec(tuple(channels), int(window_ps), tuple(sorted((delays_ps or {}).items())),
                     int(accidentals_offset_ps))
    spec.counter()  # validates the window, offset and channels up front
    t = np.ascontiguousarray(chunk.timestamps, np.int64)
    c = np.ascontiguousarray(chunk.channels, np.int16)
    workers = max(1, workers or os.cpu_count() or 1)
    if segment_tags is None:
        segment_tags = max(1 << 16, -(-t.size // (4 * workers)))  # a few segments per worker balance load
    bounds = segment_bounds(t, segment_tags)
    gaps = np.asarray(chunk.gaps, np.int64).reshape(-1, 2)
    total = spec.counter()._empty()
    if bounds:
        if workers == 1:
            parts = [count_segment(spec, t, c, a, b, gaps) for a, b in bounds]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="qlab-count") as pool:
                parts = list(pool.map(lambda ab: count_segment(spec, t, c, ab[0], ab[1], gaps), bounds))
        for p in parts:
            total.singles += p.singles
            total.coincidences += p.coincidences
            total.accidentals += p.accidentals
    total.duration_s, total.exposure_s = chunk.duration_s, chunk.exposure_s
    return total
