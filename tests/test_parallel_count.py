"""Segment-parallel counting equals the serial pass exactly, for any segment length, with delays and
accidental offsets larger than a segment's time span, gaps straddling segment boundaries, and threads."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qlab.stream.coincidence import CoincidenceCounter
from qlab.stream.parallel import count_parallel
from qlab.types import TagChunk

CHANNELS = [0, 1, 2, 3]

streams = st.integers(min_value=1, max_value=150).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 80_000), min_size=n, max_size=n),
    st.lists(st.sampled_from(CHANNELS), min_size=n, max_size=n),
))


@settings(max_examples=200, deadline=None)
@given(stream=streams,
       delays=st.dictionaries(st.sampled_from(CHANNELS), st.integers(-20_000, 20_000), max_size=4),
       window=st.integers(1, 3000),
       acc_off=st.sampled_from([0, 7000, -9000]),
       gaps=st.lists(st.tuples(st.integers(0, 80_000), st.integers(1, 8_000)), max_size=3),
       segment=st.integers(1, 40), workers=st.sampled_from([1, 2, 3]))
def test_segments_equal_the_serial_pass(stream, delays, window, acc_off, gaps, segment, workers) -> None:
    t = np.sort(np.array(stream[0], np.int64))
    c = np.array(stream[1], np.int16)
    if acc_off and abs(acc_off) <= window:
        acc_off = 0
    merged: list[list[int]] = []
    for g0, w in sorted(gaps):  # disjoint, ordered gaps, as a tagger reports them
        if merged and g0 <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], g0 + w)
        else:
            merged.append([g0, g0 + w])
    g = np.array(merged, np.int64).reshape(-1, 2)
    inside = np.zeros(t.size, bool)
    for g0, g1 in g:
        inside |= (t >= g0) & (t < g1)
    t, c = t[~inside], c[~inside]  # a tagger reports no tags inside an overflow gap
    if t.size == 0:
        return
    chunk = TagChunk(t, c, 0, 80_001, g)
    serial = CoincidenceCounter(CHANNELS, window, delays, acc_off).process(chunk)
    par = count_parallel(chunk, CHANNELS, window, delays, acc_off, workers=workers, segment_tags=segment)
    assert np.array_equal(par.singles, serial.singles)
    assert np.array_equal(par.coincidences, serial.coincidences)
    assert np.array_equal(par.accidentals, serial.accidentals)
    assert par.exposure_s == serial.exposure_s


def test_a_coincidence_straddling_every_boundary_is_counted_once() -> None:
    """Pairs 40 ns apart (a 40 ns delay undoes it) and one-pair segments: every pair spans a boundary."""
    n = 5000
    t_a = np.arange(n, dtype=np.int64) * 1_000_000
    t = np.sort(np.concatenate([t_a, t_a + 40_000]))
    c = np.tile(np.array([0, 1], np.int16), n)
    chunk = TagChunk(t, c, 0, int(t[-1]) + 1)
    for segment in (1, 2, 3, 7, 1000):
        r = count_parallel(chunk, [0, 1], 1000, {1: 40_000}, workers=2, segment_tags=segment)
        assert r.pair(0, 1) == n
        assert r.single(0) == n and r.single(1) == n
