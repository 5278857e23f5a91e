"""Numba kernels of the coincidence core.

All kernels walk the raw, time-ordered stream once. Per-channel delays are applied on the fly: for a tag
j, earlier tags i within ``scan_ps`` of raw time are examined (scan = window/2 + accidental offset +
delay spread), and the delay-corrected difference decides. Because the walk follows raw order, delays
never require re-sorting, and a tail of the previous chunk makes the result independent of chunking.
Channel numbers map to dense indices through ``lut`` (index ``channel + LUT_OFFSET``; -1 = ignored).
"""

from __future__ import annotations

import numba as nb
import numpy as np

LUT_OFFSET = 256
LUT_SIZE = 512


@nb.njit(cache=True, inline="always")
def _pair(ci, cj, d, half, acc_off, coinc, acc):
    # d = t'_j - t'_i (delay-corrected). Orient to (a, b) with a <= b: d_ab = t'_b - t'_a.
    if ci <= cj:
        a, b, dab = ci, cj, d
    else:
        a, b, dab = cj, ci, -d
    if -half <= dab <= half:
        coinc[a, b] += 1
    if acc_off != 0 and -half <= dab - acc_off <= half:
        acc[a, b] += 1


@nb.njit(cache=True, inline="always")
def _count_singles(c, lut, singles):
    for j in range(c.size):
        ci = lut[c[j] + LUT_OFFSET]
        if ci >= 0:
            singles[ci] += 1


@nb.njit(cache=True, inline="always")
def _walk_back_chunk(j, cj, t, c, lut, delay, half, acc_off, scan, coinc, acc):
    """Pair tag j (dense index cj) with earlier tags of the chunk within ``scan`` ps of raw time. Returns the
    index where the walk stopped (-1: it ran off the chunk's start)."""
    tj = t[j]
    tcj = tj - delay[cj]
    i = j - 1
    while i >= 0 and tj - t[i] <= scan:
        ci = lut[c[i] + LUT_OFFSET]
        if ci >= 0:
            _pair(ci, cj, tcj - (t[i] - delay[ci]), half, acc_off, coinc, acc)
        i -= 1
    return i


@nb.njit(cache=True, inline="always")
def _walk_back(j, tail_t, tail_c, t, c, lut, delay, half, acc_off, scan, coinc, acc):
    """Pair tag j with every earlier tag within ``scan`` ps of raw time, in the chunk and then the tail."""
    cj = lut[c[j] + LUT_OFFSET]
    if cj < 0:
        return
    if _walk_back_chunk(j, cj, t, c, lut, delay, half, acc_off, scan, coinc, acc) < 0:
        tj = t[j]
        tcj = tj - delay[cj]
        k = tail_t.size - 1
        while k >= 0 and tj - tail_t[k] <= scan:
            ci = lut[tail_c[k] + LUT_OFFSET]
            if ci >= 0:
                _pair(ci, cj, tcj - (tail_t[k] - delay[ci]), half, acc_off, coinc, acc)
            k -= 1


@nb.njit(cache=True, nogil=True)
def count_chunk(tail_t, tail_c, t, c, lut, delay, half, acc_off, scan, singles, coinc, acc):
    """Add singles, coincidences and off-peak (accidental) coincidences of chunk (t, c) to the counters.

    Pairs formed with the tail (end of the previous chunk) are included; pairs inside the tail are not.
    Two passes: singles in a tight loop, then a pair search only where the previous raw tag lies within
    ``scan`` (a few per cent of tags at realistic rates), which keeps the common path branch-light.
    """
    n = t.size
    nt = tail_t.size
    _count_singles(c, lut, singles)
    prev = tail_t[nt - 1] if nt > 0 else np.int64(-(2**62))
    for j in range(n):
        tj = t[j]
        if tj - prev > scan:
            prev = tj
            continue
        prev = tj
        _walk_back(j, tail_t, tail_c, t, c, lut, delay, half, acc_off, scan, coinc, acc)


@nb.njit(cache=True, nogil=True)
def count_chunk_offset(tail_t, tail_c, t, c, lut, delay, half, acc_off, near_scan, far_lo, far_hi, singles, coinc,
                       acc, work):
    """``count_chunk`` with accidentals: off-peak pairs (t'_b - t'_a within ``half`` of ``acc_off``) lie
    ``far_lo``..``far_hi`` ps apart in raw time (|acc_off| ∓ (half + delay spread)).

    Widening the scan to ``far_hi`` would send every tag with a partner photon a few ns earlier down the
    walk. Instead, branch-free tests on the three previous tags decide whether a tag can have a partner
    at all: the previous tag within ``near_scan``, one of the two previous tags in the band, or three tags
    within ``far_hi`` (then a deeper one might be in the band). At lab rates about 1 % of tags walk.
    ``work`` is int64 scratch of at least ``t.size``.
    """
    n = t.size
    nt = tail_t.size
    _count_singles(c, lut, singles)
    # Tags whose reach extends into the tail, or with fewer than three predecessors: the full walk.
    j0 = 0
    while j0 < n and (j0 < 3 or (nt > 0 and t[j0] - far_hi <= tail_t[nt - 1])):
        j0 += 1
    for j in range(j0):
        _walk_back(j, tail_t, tail_c, t, c, lut, delay, half, acc_off, far_hi, coinc, acc)
    # The three previous times ride in registers and the tests combine without branches; the few tags
    # that pass are listed in ``work`` and walked afterwards, which keeps the hot loop small.
    t1 = t[j0 - 1] if j0 >= 1 else 0
    t2 = t[j0 - 2] if j0 >= 2 else 0
    t3 = t[j0 - 3] if j0 >= 3 else 0
    m = 0
    for j in range(j0, n):
        tj = t[j]
        d1 = tj - t1
        d2 = tj - t2
        d3 = tj - t3
        t3 = t2
        t2 = t1
        t1 = tj
        if ((d1 <= near_scan) | ((d1 >= far_lo) & (d1 <= far_hi)) | ((d2 >= far_lo) & (d2 <= far_hi))
                | (d3 <= far_hi)):
            work[m] = j
            m += 1
    for k in range(m):  # these never reach the tail (j >= j0)
        cj = lut[c[work[k]] + LUT_OFFSET]
        if cj >= 0:
            _walk_back_chunk(work[k], cj, t, c, lut, delay, half, acc_off, far_hi, coinc, acc)


@nb.njit(cache=True, nogil=True)
def coincidence_events(tail_t, tail_c, t, c, lut, delay, half, scan, out_t, out_a, out_b):
    """Write every coincident pair of chunk (t, c) (and with the tail) as (time of the earlier corrected
    tag, dense index a, dense index b) with a <= b. Returns the number written, or -1 if out is too small."""
    n = t.size
    nt = tail_t.size
    m = 0
    cap = out_t.size
    for j in range(n):
        cj = lut[c[j] + LUT_OFFSET]
        if cj < 0:
            continue
        tj = t[j]
        tcj = tj - delay[cj]
        i = j - 1
        from_tail = False
        k = nt - 1
        while True:
            if i >= 0:
                ti, chi = t[i], c[i]
            elif k >= 0:
                from_tail = True
                ti, chi = tail_t[k], tail_c[k]
            else:
                break
            if tj - ti > scan:
                break
            ci = lut[chi + LUT_OFFSET]
            if ci >= 0:
                tci = ti - delay[ci]
                d = tcj - tci
                if -half <= d <= half:
                    if m >= cap:
                        return -1
                    if ci <= cj:
                        out_a[m], out_b[m] = ci, cj
                    else:
                        out_a[m], out_b[m] = cj, ci
                    out_t[m] = min(tci, tcj)
                    m += 1
            if from_tail:
                k -= 1
            else:
                i -= 1
    return m


@nb.njit(cache=True, nogil=True)
def cross_histogram(t, c, lut, ref, delay, lo, bin_ps, nbins, scan, hist):
    """hist[k, b] += number of pairs with (t'_k - t'_ref) in bin b, bins starting at ``lo`` ps.

    ``ref`` is a dense index; k runs over all dense indices (the ref row collects nothing useful).
    """
    n = t.size
    for j in range(n):
        cj = lut[c[j] + LUT_OFFSET]
        if cj < 0:
            continue
        tj = t[j]
        i = j - 1
        while i >= 0 and tj - t[i] <= scan:
            ci = lut[c[i] + LUT_OFFSET]
            if ci >= 0 and (ci == ref) != (cj == ref):
                if cj == ref:  # earlier tag i is the other channel: diff = t'_i - t'_ref
                    k = ci
                    diff = (t[i] - delay[ci]) - (tj - delay[cj])
                else:
                    k = cj
                    diff = (tj - delay[cj]) - (t[i] - delay[ci])
                b = (diff - lo) // bin_ps
                if 0 <= b < nbins:
                    hist[k, b] += 1
            i -= 1


@nb.njit(cache=True, nogil=True)
def start_stop_histogram(t, c, lut, a, b, delay, lo, bin_ps, nbins, hist):
    """Start-stop histogram: for each start on a, the first later stop on b (delay-corrected)."""
    n = t.size
    last_start = np.int64(-(2**62))
    have = False
    for j in range(n):
        cj = lut[c[j] + LUT_OFFSET]
        if cj == a:
            last_start = t[j] - delay[a]
            have = True
        elif cj == b and have:
            diff = (t[j] - delay[b]) - last_start
            k = (diff - lo) // bin_ps
            if 0 <= k < nbins:
                hist[k] += 1
            have = False


@nb.njit(cache=True, nogil=True)
def pair_indices(ta, tb, lo, hi, out_i, out_j):
    """Every index pair (i in ta, j in tb) of sorted streams with tb[j] - ta[i] in [lo, hi].

    Returns the number written, or -1 if the outputs are too small.
    """
    m = 0
    j0 = 0
    nb_ = tb.size
    cap = out_i.size
    for i in range(ta.size):
        t = ta[i]
        while j0 < nb_ and tb[j0] < t + lo:
            j0 += 1
        j = j0
        while j < nb_ and tb[j] <= t + hi:
            if m >= cap:
                return -1
            out_i[m] = i
            out_j[m] = j
            m += 1
            j += 1
    return m
