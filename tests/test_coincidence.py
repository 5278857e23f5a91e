"""Coincidence core: exact against a brute-force reference, independent of chunking."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qlab.stream.coincidence import CoincidenceCounter
from qlab.stream.histogram import cross_correlation, g2, start_stop
from qlab.types import TagChunk

CHANNELS = [0, 1, 2, 3]


def brute_force(t, c, delays, window_ps, acc_off, gaps=()):
    keep = np.ones(t.size, bool)
    for g0, g1 in gaps:
        keep &= ~((t >= g0) & (t < g1))
    seg = np.zeros(t.size, int)
    for g0, _ in gaps:
        seg += t >= g0
    n = len(CHANNELS)
    singles = np.zeros(n, int)
    coinc = np.zeros((n, n), int)
    acc = np.zeros((n, n), int)
    tc = t - np.array([delays.get(int(x), 0) for x in c])
    half = window_ps // 2
    idx = np.flatnonzero(keep)
    for i in idx:
        singles[c[i]] += 1
    for ii, i in enumerate(idx):
        for j in idx[ii + 1:]:
            if seg[i] != seg[j]:
                continue
            a, b = int(c[i]), int(c[j])
            d = tc[j] - tc[i]
            if a > b:
                a, b, d = b, a, -d
            if abs(d) <= half:
                coinc[a, b] += 1
            if acc_off and abs(d - acc_off) <= half:
                acc[a, b] += 1
    return singles, coinc, acc


streams = st.integers(min_value=1, max_value=120).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 60_000), min_size=n, max_size=n),
    st.lists(st.sampled_from(CHANNELS), min_size=n, max_size=n),
))


@settings(max_examples=150, deadline=None)
@given(stream=streams,
       delays=st.dictionaries(st.sampled_from(CHANNELS), st.integers(-20_000, 20_000), max_size=4),
       window=st.integers(1, 3000),
       splits=st.lists(st.integers(0, 120), max_size=6),
       acc_off=st.sampled_from([0, 7000, -9000]))
def test_exact_and_chunking_independent(stream, delays, window, splits, acc_off) -> None:
    t = np.sort(np.array(stream[0], np.int64))
    c = np.array(stream[1], np.int16)
    if acc_off and abs(acc_off) <= window:
        acc_off = 0
    ref = brute_force(t, c, delays, window, acc_off)
    cc = CoincidenceCounter(CHANNELS, window, delays, acc_off)
    edges = sorted({0, t.size, *[min(s, t.size) for s in splits]})
    for a, b in zip(edges[:-1], edges[1:], strict=False):
        cc.process(TagChunk(t[a:b], c[a:b], 0, 1))
    r = cc.total
    assert np.array_equal(r.singles, ref[0])
    assert np.array_equal(r.coincidences, ref[1])
    assert np.array_equal(r.accidentals, ref[2])


@settings(max_examples=60, deadline=None)
@given(stream=streams, gap=st.tuples(st.integers(0, 60_000), st.integers(1, 10_000)),
       split=st.integers(0, 120))
def test_gaps_excluded(stream, gap, split) -> None:
    t = np.sort(np.array(stream[0], np.int64))
    c = np.array(stream[1], np.int16)
    g0, g1 = gap[0], gap[0] + gap[1]
    inside = (t >= g0) & (t < g1)
    t, c = t[~inside], c[~inside]  # a tagger reports no tags inside an overflow gap
    ref = brute_force(t, c, {1: 500}, 2000, 0, gaps=[(g0, g1)])
    cc = CoincidenceCounter(CHANNELS, 2000, {1: 500})
    k = min(split, t.size)
    gaps = np.array([[g0, g1]], np.int64)
    none = np.zeros((0, 2), np.int64)
    # A gap belongs to the chunk whose time span holds it: the first one if the second starts after it.
    first_has_gap = k == t.size or g1 <= t[k]
    cc.process(TagChunk(t[:k], c[:k], 0, 1, gaps if first_has_gap else none))
    cc.process(TagChunk(t[k:], c[k:], 0, 1, none if first_has_gap else gaps))
    assert np.array_equal(cc.total.singles, ref[0])
    assert np.array_equal(cc.total.coincidences, ref[1])


def test_delays_larger_than_a_chunk() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    t0 = np.sort(rng.integers(0, 10**9, n))
    t = np.concatenate([t0, t0 + 250_000]).astype(np.int64)  # channel 1 lags channel 0 by 250 ns
    c = np.concatenate([np.zeros(n, np.int16), np.ones(n, np.int16)])
    order = np.argsort(t, kind="stable")
    t, c = t[order], c[order]
    cc = CoincidenceCounter([0, 1], 1000, {1: 250_000})
    for k in range(0, t.size, 7):  # chunks of 7 tags span far less than the delay
        cc.process(TagChunk(t[k:k + 7], c[k:k + 7], 0, 1))
    # Exact reference: for every corrected channel-0 time, channel-1 corrected times within ±500 ps.
    t0c, t1c = np.sort(t[c == 0]), np.sort(t[c == 1] - 250_000)
    expected = int((np.searchsorted(t1c, t0c + 500, "right") - np.searchsorted(t1c, t0c - 500, "left")).sum())
    assert cc.total.pair(0, 1) == expected >= n


def test_exposure_excludes_gaps() -> None:
    chunk = TagChunk(np.arange(10, dtype=np.int64), np.zeros(10, np.int16), 0, 10**12,
                     np.array([[100, 100 + 2 * 10**11]], np.int64))
    res = CoincidenceCounter([0], 10).process(chunk)
    assert res.duration_s == 1.0
    assert abs(res.exposure_s - 0.8) < 1e-12


def test_events_output_matches_counts() -> None:
    rng = np.random.default_rng(4)
    t = np.sort(rng.integers(0, 10**7, 3000)).astype(np.int64)
    c = rng.integers(0, 4, 3000).astype(np.int16)
    cc = CoincidenceCounter(CHANNELS, 3000, {2: 1000}, keep_events=True)
    res = cc.process(TagChunk(t[:1500], c[:1500], 0, 1)).merge(cc.process(TagChunk(t[1500:], c[1500:], 0, 1)))
    ev_t, ev_a, ev_b = res.events
    m = np.zeros((4, 4), int)
    np.add.at(m, (ev_a, ev_b), 1)
    assert np.array_equal(m, res.coincidences)
    assert ev_t.size == res.coincidences.sum() > 0


def test_histograms() -> None:
    rng = np.random.default_rng(5)
    base = np.sort(rng.integers(0, 10**10, 20000))
    t = np.concatenate([base, base + 3000 + rng.integers(-50, 51, base.size)]).astype(np.int64)
    c = np.concatenate([np.zeros(base.size, np.int16), np.ones(base.size, np.int16)])
    order = np.argsort(t, kind="stable")
    chunk = TagChunk(t[order], c[order], 0, 10**10)
    h = cross_correlation(chunk, 0, [1], 10_000, 100)[1]
    assert h.counts.sum() >= base.size
    assert abs(h.centers_ps[np.argmax(h.counts)] - 3000) <= 100
    ss = start_stop(chunk, 0, 1, 10_000, 100)
    assert abs(ss.centers_ps[np.argmax(ss.counts)] - 3000) <= 100
    _, norm = g2(chunk, 0, 1, 10_000, 100)
    assert norm.max() > 100 and np.median(norm) < 2


@settings(max_examples=80, deadline=None)
@given(stream=streams, splits=st.lists(st.integers(0, 120), max_size=5), window=st.integers(10, 4000),
       delays=st.dictionaries(st.sampled_from(CHANNELS), st.integers(-3000, 3000), max_size=4))
def test_nfold_exact_and_chunking_independent(stream, splits, window, delays) -> None:
    from qlab.stream.coincidence import NFoldCounter

    t = np.sort(np.array(stream[0], np.int64))
    c = np.array(stream[1], np.int16)
    groups = [[0, 1, 2], [1, 3]]
    tc = t - np.array([delays.get(int(x), 0) for x in c])
    half = window // 2
    expected = []
    for g in groups:
        n = 0
        for a in tc[c == g[0]]:
            if all(np.any(np.abs(tc[c == o] - a) <= half) for o in g[1:]):
                n += 1
        expected.append(n)
    counter = NFoldCounter(groups, window, delays)
    edges = sorted({0, t.size, *[min(s, t.size) for s in splits]})
    for a, b in zip(edges[:-1], edges[1:], strict=False):
        counter.process(TagChunk(t[a:b], c[a:b], 0, 1))
    counter.process(TagChunk(np.zeros(0, np.int64), np.zeros(0, np.int16), 0, 0), final=True)
    assert counter.counts.tolist() == expected


def test_accidentals_exact_over_many_flag_blocks() -> None:
    """Streams long enough for many of the accidentals kernel's blocks (singles are counted per block there),
    with partners near the on-peak and off-peak windows at every block edge and an unmapped channel."""
    from qlab.stream.kernels import FLAG_BLOCK

    rng = np.random.default_rng(11)
    n = 12 * FLAG_BLOCK + 37
    t = np.cumsum(rng.integers(1, 30_000, n)).astype(np.int64)
    t[FLAG_BLOCK::FLAG_BLOCK] = t[FLAG_BLOCK - 1::FLAG_BLOCK][:t[FLAG_BLOCK::FLAG_BLOCK].size] + 9_000
    t = np.sort(t)
    c = rng.choice(np.array([0, 1, 2, 3, 9], np.int16), n)  # 9 is not counted
    delays = {0: 0, 1: 1500, 2: -700, 3: 300}
    window, acc_off = 2000, -9000
    half = window // 2
    idx = {ch: k for k, ch in enumerate(CHANNELS)}
    tc = t - np.array([delays.get(int(x), 0) for x in c])
    singles = np.zeros(4, int)
    coinc = np.zeros((4, 4), int)
    acc = np.zeros((4, 4), int)
    reach = abs(acc_off) + half + 2200
    for j in range(n):
        if c[j] not in idx:
            continue
        singles[idx[c[j]]] += 1
        for i in range(int(np.searchsorted(t, t[j] - reach)), j):
            if c[i] not in idx:
                continue
            a, b, d = idx[c[i]], idx[c[j]], tc[j] - tc[i]
            if a > b:
                a, b, d = b, a, -d
            coinc[a, b] += abs(d) <= half
            acc[a, b] += abs(d - acc_off) <= half
    assert acc.sum() > 50 and coinc.sum() > 50  # both windows see pairs
    for split in (0, 1, FLAG_BLOCK - 1, 5 * FLAG_BLOCK + 3):
        cc = CoincidenceCounter(CHANNELS, window, delays, acc_off)
        cc.process(TagChunk(t[:split], c[:split], 0, 1))
        cc.process(TagChunk(t[split:], c[split:], 0, 1))
        assert np.array_equal(cc.total.singles, singles)
        assert np.array_equal(cc.total.coincidences, coinc)
        assert np.array_equal(cc.total.accidentals, acc)
