"""Numba kernels of the simulated lab: click generation and near-sorted merging.

The click process is the superposition of (a) photon-pair emissions that produce at least one
detection and (b) dark counts of every detector: one Poisson process whose events are assigned a
category (which detectors fire). Dead time (non-paralyzable) and afterpulsing act in true time;
jitter, cable/input delays, clock offset, frequency drift and resolution are applied on the way out.
Times inside the kernel are float64 ps relative to ``base_ps`` of the batch, so precision does not
degrade over long runs.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from qlab.rng import EXP_TABLE, exponential, next_u64, normal, uniform

_LOW28 = np.uint64((1 << 28) - 1)
_LOW20 = np.uint64((1 << 20) - 1)
_LOW24 = np.uint64((1 << 24) - 1)
_LOW32 = np.uint64(0xFFFFFFFF)


def alias_table(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table: draw category i with probability p_i from one uniform number in O(1)."""
    p = np.asarray(probabilities, float)
    n = p.size
    q = p * n / p.sum()
    alias = np.zeros(n, np.int64)
    small = [i for i in range(n) if q[i] < 1.0]
    large = [i for i in range(n) if q[i] >= 1.0]
    while small and large:
        s, lg = small.pop(), large.pop()
        alias[s] = lg
        q[lg] -= 1.0 - q[s]
        (small if q[lg] < 1.0 else large).append(lg)
    for i in small + large:
        q[i] = 1.0
    return q, alias


@nb.njit(cache=True, nogil=True)
def _emit_afterpulse(d, t, state, table, last_click, ap_pending, dead_ps, ap_prob, ap_mean_ps, jitter_ps,
                     shift_ps, tagger_of, scale, tag_base, res_ps, input_of, out_t, out_ch, out_k, n):
    # Rare path (one afterpulse); kept out of line so the hot loop stays small.
    if t - last_click[d] < dead_ps[d]:
        return n
    last_click[d] = t
    if ap_prob[d] > 0.0 and uniform(state) < ap_prob[d]:
        ta = t + dead_ps[d] + exponential(state) * ap_mean_ps[d]
        if ta < ap_pending[d]:
            ap_pending[d] = ta
    k = tagger_of[d]
    v = tag_base[k] + np.int64(np.floor((t + normal(state, table) * jitter_ps[d] + shift_ps[d]) * scale[k]))
    r = res_ps[k]
    if r > 1:
        v -= v % r
    out_t[n] = v
    out_ch[n] = input_of[d]
    out_k[n] = k
    return n + 1


@nb.njit(cache=True, nogil=True)
def generate_clicks(state, table, t_start, t_stop, rate_per_ps, alias_q, alias_j, cat_a, cat_b,
                    last_click, ap_pending, dead_ps, ap_prob, ap_mean_ps, jitter_ps, shift_ps,
                    tagger_of, scale, tag_base, res_ps, input_of, out_t, out_ch, out_k, first_idx, first_t):
    """Generate clicks in [t_start, t_stop) (float ps relative to the batch base).

    Returns (n written, time reached). Stops early when the output is within 4 slots of full, so the
    caller can drain and call again from the time reached. ``first_idx``/``first_t`` (preset to -1) receive
    each detector's first photon click of this call: its output index and true time.
    """
    n = 0
    cap = out_t.size - 4
    ndet = dead_ps.size
    ncat = alias_q.size
    t = t_start
    ap_min = np.inf
    for d in range(ndet):
        ap_min = min(ap_min, ap_pending[d])
    inv_rate = 1.0 / rate_per_ps if rate_per_ps > 0.0 else np.inf
    while n < cap:
        # One 64-bit draw per event: bits 52–63 and 28–51 give the exponential waiting time (table cell and
        # position in it), bits 0–27 the category through the alias table.
        u = next_u64(state)
        idx = np.int64(u >> np.uint64(52))
        frac = float((u >> np.uint64(28)) & _LOW24) * (1.0 / 16777216.0)
        if idx == 0:
            wait = -np.log((frac + 2.0**-30) / 4096.0)
        else:
            wait = EXP_TABLE[idx] + frac * (EXP_TABLE[idx + 1] - EXP_TABLE[idx])
        t_next = t + wait * inv_rate
        while ap_min < t_next and ap_min < t_stop and n < cap:
            dmin = 0
            for d in range(ndet):
                if ap_pending[d] == ap_min:
                    dmin = d
            ap_pending[dmin] = np.inf
            n = _emit_afterpulse(dmin, ap_min, state, table, last_click, ap_pending, dead_ps, ap_prob,
                                 ap_mean_ps, jitter_ps, shift_ps, tagger_of, scale, tag_base, res_ps, input_of,
                                 out_t, out_ch, out_k, n)
            ap_min = np.inf
            for d in range(ndet):
                ap_min = min(ap_min, ap_pending[d])
        if t_next >= t_stop:
            return n, t_stop
        if n >= cap:
            return n, t
        t = t_next
        x = float(u & _LOW28) * (ncat / 268435456.0)
        c = min(np.int64(x), ncat - 1)
        # Branch-free alias choice: the comparison is a coin flip the CPU cannot predict.
        c += (alias_j[c] - c) * np.int64(x - c >= alias_q[c])
        for side in range(2):
            d = cat_a[c] if side == 0 else cat_b[c]
            if d < 0:
                continue
            if t - last_click[d] < dead_ps[d]:
                continue  # non-paralyzable dead time: the photon is lost
            last_click[d] = t
            # One draw per click: bits 20–63 give the jitter (inverse-CDF table), bits 0–19 the afterpulse coin.
            w = next_u64(state)
            if ap_prob[d] > 0.0 and float(w & _LOW20) < ap_prob[d] * 1048576.0:
                ta = t + dead_ps[d] + exponential(state) * ap_mean_ps[d]
                if ta < ap_pending[d]:
                    ap_pending[d] = ta
                if ta < ap_min:
                    ap_min = ta
            j = np.int64(w >> np.uint64(52))
            g = float((w >> np.uint64(20)) & _LOW32) * (1.0 / 4294967296.0)
            z = table[j] + g * (table[j + 1] - table[j])
            k = tagger_of[d]
            v = tag_base[k] + np.int64(np.floor((t + z * jitter_ps[d] + shift_ps[d]) * scale[k]))
            r = res_ps[k]
            if r > 1:
                v -= v % r
            out_t[n] = v
            out_ch[n] = input_of[d]
            out_k[n] = k
            if first_idx[d] < 0:
                first_idx[d] = n
                first_t[d] = t
            n += 1
    return n, t


@nb.njit(cache=True, nogil=True)
def insertion_sort_pairs(t, ch):
    """Sort (t, ch) by t in place; O(n + inversions), ideal for jitter-perturbed streams."""
    for i in range(1, t.size):
        ti = t[i]
        if ti >= t[i - 1]:
            continue
        ci = ch[i]
        j = i - 1
        while j >= 0 and t[j] > ti:
            t[j + 1] = t[j]
            ch[j + 1] = ch[j]
            j -= 1
        t[j + 1] = ti
        ch[j + 1] = ci
