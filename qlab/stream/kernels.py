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
def _classify(ci, cj, d, half, acc_off):
    """Orient a pair to (a, b) with a <= b (d = t'_j - t'_i, so d_ab = t'_b - t'_a) and say whether it is a
    coincidence (|d_ab| <= half) and an accidental (|d_ab - acc_off| <= half; never when acc_off is 0).

    Scalars only: a called Numba helper taking arrays pays reference counting on every call (tens of ns),
    which made the pair walks cost more than the whole scan; the helpers here are inlined at Numba IR level
    (``inline="always"``), which removes the call.
    """
    if ci <= cj:
        a, b, dab = ci, cj, d
    else:
        a, b, dab = cj, ci, -d
    hit_coinc = np.int64(-half <= dab <= half)
    hit_acc = np.int64(acc_off != 0 and -half <= dab - acc_off <= half)
    return a, b, hit_coinc, hit_acc


@nb.njit(cache=True, inline="always")
def _walk_back(tj, cj, tcj, tt, tc, i, reach, lut, delay, half, acc_off, coinc, acc):
    """Pair tag j (raw time ``tj``, dense channel ``cj``, delay-corrected ``tcj``) with ``tt[i]``, ``tt[i - 1]``,
    ... while they lie within ``reach`` ps of raw time; returns the index where the walk stopped (-1: it ran
    off the start of ``tt``). Inlined into the kernels at Numba IR level, so passing arrays costs nothing."""
    while i >= 0 and tj - tt[i] <= reach:
        ci = lut[tc[i] + LUT_OFFSET]
        if ci >= 0:
            a, b, hc, ha = _classify(ci, cj, tcj - (tt[i] - delay[ci]), half, acc_off)
            coinc[a, b] += hc
            acc[a, b] += ha
        i -= 1
    return i


@nb.njit(cache=True, inline="always")
def _count_singles(c, lut, singles):
    for j in range(c.size):
        ci = lut[c[j] + LUT_OFFSET]
        if ci >= 0:
            singles[ci] += 1


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
        cj = lut[c[j] + LUT_OFFSET]
        if cj < 0:
            continue
        tcj = tj - delay[cj]
        i = _walk_back(tj, cj, tcj, t, c, j - 1, scan, lut, delay, half, acc_off, coinc, acc)
        if i < 0:  # the walk ran off the chunk's start: continue into the tail
            _walk_back(tj, cj, tcj, tail_t, tail_c, nt - 1, scan, lut, delay, half, acc_off, coinc, acc)


@nb.njit(cache=True, nogil=True)
def _flag_candidates(tt, near_scan, far_lo, far_hi, flags):
    """flags[k + 3] = 1 where tag k + 3 of ``tt`` may have an earlier partner: the previous tag within
    ``near_scan``, one of the two previous tags in the band [far_lo, far_hi], or the third previous within
    ``far_hi`` (then a deeper one might be in the band). A superset of the tags with partners (bands are
    rounded outward), exact because the walk decides.

    Indices start at 0 and only look forward, so LLVM proves them non-negative and vectorises the loop
    (a ``t[j - 2]`` form keeps Numba's negative-index wraparound and runs ~5x slower)."""
    mid = (far_lo + far_hi) // 2
    hw = (far_hi - far_lo) // 2 + 1
    for k in range(tt.size - 3):
        x = tt[k + 3]
        d1 = x - tt[k + 2]
        flags[k + 3] = ((d1 <= near_scan) | (abs(d1 - mid) <= hw) | (abs(x - tt[k + 1] - mid) <= hw)
                        | (x - tt[k] <= far_hi))


FLAG_BLOCK = 512  # tags counted, flagged and walked at a time: their data stay in L1 between the passes


@nb.njit(cache=True, nogil=True)
def count_chunk_offset(tail_t, tail_c, t, c, lut, delay, half, acc_off, near_scan, far_lo, far_hi, singles, coinc,
                       acc):
    """``count_chunk`` with accidentals: off-peak pairs (t'_b - t'_a within ``half`` of ``acc_off``) lie
    ``far_lo``..``far_hi`` ps apart in raw time (|acc_off| ∓ (half + delay spread)).

    Widening the scan to ``far_hi`` would send every tag with a partner photon a few ns earlier down the
    walk. Instead, block by block, a vectorised pass flags the tags that can have a partner at all
    (``_flag_candidates``, about 1 % at lab rates), a scan over 8 flags at a time lists them branch-free,
    and only they walk back. Singles are counted block by block too: the scatter-bound singles loop runs
    while the hardware prefetcher brings in the next block's timestamps, which the streaming flag pass would
    otherwise wait for (0.76 -> 0.85-0.9 of the plain path's speed; the plain path, one branchy loop, is
    fastest with its singles in a separate pass).
    """
    n = t.size
    nt = tail_t.size
    # Tags whose reach extends into the tail, or with fewer than three predecessors: the full walk.
    j0 = 0
    while j0 < n and (j0 < 3 or (nt > 0 and t[j0] - far_hi <= tail_t[nt - 1])):
        j0 += 1
    _count_singles(c[:j0], lut, singles)
    for j in range(j0):
        cj = lut[c[j] + LUT_OFFSET]
        if cj < 0:
            continue
        tj = t[j]
        tcj = tj - delay[cj]
        i = _walk_back(tj, cj, tcj, t, c, j - 1, far_hi, lut, delay, half, acc_off, coinc, acc)
        if i < 0:
            _walk_back(tj, cj, tcj, tail_t, tail_c, nt - 1, far_hi, lut, delay, half, acc_off, coinc, acc)
    # flags[8 + q] belongs to tag s0 + q of the block starting at s0 (8 leading bytes keep the 8-byte words
    # aligned with the block while the flag pass writes from 3 tags before it).
    words = np.zeros(FLAG_BLOCK // 8 + 2, np.uint64)
    flags = words.view(np.uint8)
    listed = np.empty(FLAG_BLOCK + 8, np.uint64)
    for s0 in range(j0, n, FLAG_BLOCK):
        s1 = min(s0 + FLAG_BLOCK, n)
        _count_singles(c[s0:s1], lut, singles)
        nw = (s1 - s0 + 7) // 8
        for k in range(8 + s1 - s0, 8 + 8 * nw):
            flags[k] = 0
        _flag_candidates(t[s0 - 3:s1], near_scan, far_lo, far_hi, flags[5:8 + s1 - s0])
        m = np.uint64(0)  # unsigned: no negative-index wraparound on the branch-free list writes
        for w in range(1, nw + 1):
            if words[w] != 0:
                for q in range(8 * w, 8 * w + 8):
                    listed[m] = q
                    m += np.uint64(flags[q] != 0)
        for r in range(m):
            j = s0 - 8 + np.int64(listed[r])  # j >= j0: the walk never reaches the tail
            cj = lut[c[j] + LUT_OFFSET]
            if cj < 0:
                continue
            tj = t[j]
            _walk_back(tj, cj, tj - delay[cj], t, c, j - 1, far_hi, lut, delay, half, acc_off, coinc, acc)


@nb.njit(cache=True, nogil=True)
def channel_histogram(c, counts):
    """counts[ch + LUT_OFFSET] += events of every channel ch in ``c`` (int16, -256..255); ``counts`` has
    LUT_SIZE entries."""
    for j in range(c.size):
        counts[c[j] + LUT_OFFSET] += 1


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
    cross_histogram_from(t, c, lut, ref, delay, lo, bin_ps, nbins, scan, hist, 0)


@nb.njit(cache=True, nogil=True)
def cross_histogram_from(t, c, lut, ref, delay, lo, bin_ps, nbins, scan, hist, j_start):
    """``cross_histogram`` of the pairs whose later raw tag has index >= ``j_start`` (the tags before it are
    context: a segment's tail), so segments of a stream add up to the whole stream's histogram."""
    n = t.size
    for j in range(j_start, n):
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


def pairs_within(ta: np.ndarray, tb: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j) of every pair of sorted int64 streams with tb[j] - ta[i] in [lo, hi] (ps);
    ``pair_indices`` with outputs grown until they hold all pairs."""
    cap = max(1024, 4 * min(ta.size, tb.size) + 16)
    while True:
        out_i, out_j = np.empty(cap, np.int64), np.empty(cap, np.int64)
        m = pair_indices(ta, tb, lo, hi, out_i, out_j)
        if m >= 0:
            return out_i[:m], out_j[:m]
        cap *= 4
