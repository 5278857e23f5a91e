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

from qlab.sim.rng import exponential, normal, uniform


@nb.njit(cache=True)
def _emit(d, t, state, table, last_click, ap_pending, dead_ps, ap_prob, ap_mean_ps, jitter_ps, shift_ps,
          tagger_of, scale, tag_base, res_ps, input_of, out_t, out_ch, out_k, n):
    if t - last_click[d] < dead_ps[d]:
        return n
    last_click[d] = t
    if ap_prob[d] > 0.0 and uniform(state) < ap_prob[d]:
        ta = t + dead_ps[d] + exponential(state) * ap_mean_ps[d]
        if ta < ap_pending[d]:
            ap_pending[d] = ta
    k = tagger_of[d]
    rel = (t + normal(state, table) * jitter_ps[d] + shift_ps[d]) * scale[k]
    v = tag_base[k] + np.int64(np.floor(rel))
    r = res_ps[k]
    if r > 1:
        v -= v % r
    out_t[n] = v
    out_ch[n] = input_of[d]
    out_k[n] = k
    return n + 1


@nb.njit(cache=True)
def generate_clicks(state, table, t_start, t_stop, rate_per_ps, cum_prob, cat_a, cat_b,
                    last_click, ap_pending, dead_ps, ap_prob, ap_mean_ps, jitter_ps, shift_ps,
                    tagger_of, scale, tag_base, res_ps, input_of, out_t, out_ch, out_k):
    """Generate clicks in [t_start, t_stop) (float ps relative to the batch base).

    Returns (n written, time reached). Stops early when the output is within 4 slots of full, so the
    caller can drain and call again from the time reached.
    """
    n = 0
    cap = out_t.size - 4
    ndet = dead_ps.size
    t = t_start
    ap_min = np.inf
    for d in range(ndet):
        ap_min = min(ap_min, ap_pending[d])
    ncat = cum_prob.size
    while n < cap:
        t_next = t + exponential(state) / rate_per_ps if rate_per_ps > 0.0 else np.inf
        # afterpulses due before the next primary event
        while ap_min < t_next and ap_min < t_stop and n < cap:
            dmin = 0
            for d in range(ndet):
                if ap_pending[d] == ap_min:
                    dmin = d
            ta = ap_pending[dmin]
            ap_pending[dmin] = np.inf
            n = _emit(dmin, ta, state, table, last_click, ap_pending, dead_ps, ap_prob, ap_mean_ps,
                      jitter_ps, shift_ps, tagger_of, scale, tag_base, res_ps, input_of, out_t, out_ch,
                      out_k, n)
            ap_min = np.inf
            for d in range(ndet):
                ap_min = min(ap_min, ap_pending[d])
        if t_next >= t_stop:
            return n, t_stop
        if n >= cap:
            return n, t
        t = t_next
        u = uniform(state)
        c = 0
        while c < ncat - 1 and cum_prob[c] < u:
            c += 1
        da = cat_a[c]
        db = cat_b[c]
        if da >= 0:
            n = _emit(da, t, state, table, last_click, ap_pending, dead_ps, ap_prob, ap_mean_ps, jitter_ps,
                      shift_ps, tagger_of, scale, tag_base, res_ps, input_of, out_t, out_ch, out_k, n)
        if db >= 0:
            n = _emit(db, t, state, table, last_click, ap_pending, dead_ps, ap_prob, ap_mean_ps, jitter_ps,
                      shift_ps, tagger_of, scale, tag_base, res_ps, input_of, out_t, out_ch, out_k, n)
        for d in range(ndet):
            ap_min = min(ap_min, ap_pending[d])
    return n, t


@nb.njit(cache=True)
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
