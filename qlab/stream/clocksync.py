"""Clock offset and drift between two independent time taggers (Alice's and Bob's).

Model: ``t_bob - t_alice = offset_ps + drift_ppm·1e-6 · t_alice`` for the two photons of a pair (cable
delays fold into the offset). The offset is found over a ±0.5 s range by FFT cross-correlation of coarse
(1 µs) bins, then refined on the exact time differences of candidate pairs with an iterative line fit
(which also yields the drift). ``ClockTracker`` then follows the drift chunk by chunk with a first-order
servo on the observed coincidence time differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlab.errors import AnalysisError
from qlab.stream.kernels import pairs_within
from qlab.types import TagChunk


@dataclass
class ClockSync:
    offset_ps: float  # t_bob - t_alice at t_alice = 0
    drift_ppm: float
    significance: float  # coarse peak height above background, in σ
    pairs: int  # pairs in the final fit
    residual_rms_ps: float

    def bob_to_alice(self, t_bob: np.ndarray) -> np.ndarray:
        """Map Bob's timestamps into Alice's time frame (int64 ps)."""
        k = self.drift_ppm * 1e-6
        return np.round((t_bob.astype(np.float64) - self.offset_ps) / (1.0 + k)).astype(np.int64)


def _differences(ta: np.ndarray, tb: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    out_i, out_j = pairs_within(ta, tb, int(np.floor(lo)), int(np.ceil(hi)))
    t = ta[out_i]
    return t, tb[out_j] - t


def coarse_offset(ta: np.ndarray, tb: np.ndarray, search_ps: float = 5e11, bin_ps: float = 1e6,
                  segment_ps: float = 2e11) -> tuple[float, float]:
    """FFT cross-correlation of binned streams: (offset estimate in ps, peak significance in σ)."""
    if ta.size == 0 or tb.size == 0:
        raise AnalysisError("clock offset: one of the streams is empty")
    a0 = float(ta[0])
    a_sel = ta[ta < a0 + segment_ps]
    b_lo = a0 - search_ps
    b_sel = tb[(tb >= b_lo) & (tb < a0 + segment_ps + search_ps)]
    if b_sel.size == 0:
        raise AnalysisError(f"clock offset: Bob's stream has no tags within ±{search_ps * 1e-12:g} s of Alice's")
    na = int(np.ceil(segment_ps / bin_ps)) + 1
    nb = int(np.ceil((segment_ps + 2 * search_ps) / bin_ps)) + 1
    a_hist = np.bincount(((a_sel - a0) // bin_ps).astype(np.int64), minlength=na)[:na].astype(np.float64)
    b_hist = np.bincount(((b_sel - b_lo) // bin_ps).astype(np.int64), minlength=nb)[:nb].astype(np.float64)
    n = 1 << int(np.ceil(np.log2(na + nb)))
    corr = np.fft.irfft(np.conj(np.fft.rfft(a_hist, n)) * np.fft.rfft(b_hist, n), n)
    lags = corr[: nb]  # lag k: B bin (i + k) against A bin i
    k = int(np.argmax(lags))
    bg = float(np.median(lags))
    sig = (lags[k] - bg) / np.sqrt(max(bg, 1.0))
    # Sub-bin: the peak may straddle two bins; take the weighted centre of the top bins.
    lo_k, hi_k = max(0, k - 1), min(lags.size, k + 2)
    w = np.clip(lags[lo_k:hi_k] - bg, 0, None)
    kc = float((w * np.arange(lo_k, hi_k)).sum() / w.sum()) if w.sum() > 0 else float(k)
    return b_lo - a0 + kc * bin_ps, float(sig)


def find_clock_offset(alice: TagChunk, bob: TagChunk, search_range_s: float = 0.5, min_sigma: float = 8.0,
                      window_ps: float = 2000.0) -> ClockSync:
    """Offset (≤ 100 ps with ~1e4 pairs) and drift of Bob's clock against Alice's.

    Raises AnalysisError when no significant correlation peak exists within ±search_range_s.
    """
    ta, tb = alice.timestamps, bob.timestamps
    off, sig = coarse_offset(ta, tb, search_range_s * 1e12)
    if sig < min_sigma:
        raise AnalysisError(f"no significant clock-offset peak within ±{search_range_s:g} s (best "
                            f"{sig:.1f} σ < {min_sigma} σ); are both taggers recording the same source?")
    a0 = float(ta[0])
    # 1) Intercept only, on a short span that drift cannot smear: ±3 µs around the coarse estimate.
    sel = ta[ta < a0 + 5e10]
    t_p, d_p = _differences(sel, tb, off - 3e6, off + 3e6)
    icpt = off + _peak(d_p - off, 3e6, 100e3)
    drift = 0.0  # model: t_bob - t_alice = icpt + drift·1e-6·(t_alice - a0)
    # 2) Follow the peak slice by slice, extrapolating the line so far (robust to accidentals and drift).
    span = float(ta[-1]) - a0
    n_slices = int(min(40, max(4, span / 2.5e10)))
    edges = a0 + np.linspace(0.0, span + 1.0, n_slices + 1)
    ts_, ds_ = [], []
    for k in range(n_slices):
        seg = ta[(ta >= edges[k]) & (ta < edges[k + 1])]
        if seg.size == 0:
            continue
        tm = 0.5 * (edges[k] + edges[k + 1]) - a0
        pred = icpt + drift * 1e-6 * tm
        t_p, d_p = _differences(seg, tb, pred - 2e6, pred + 2e6)
        if t_p.size < 10:
            continue
        resid = d_p - (icpt + drift * 1e-6 * (t_p - a0))
        peak = _peak(resid, 2e6, 10e3)
        close = np.abs(resid - peak) <= 3 * window_ps
        if close.sum() < 5:
            continue
        ts_.append(float(np.mean(t_p[close])) - a0)
        ds_.append(float(np.mean(d_p[close])))
        if len(ts_) >= 2 and ts_[-1] - ts_[0] > 1e9:
            slope, c0 = np.polyfit(ts_, ds_, 1)
            icpt, drift = float(c0), float(slope * 1e6)
        elif len(ts_) == 1:
            icpt = ds_[0] - drift * 1e-6 * ts_[0]
    # 3) Final least-squares line through every pair within the coincidence window.
    lo = icpt + min(0.0, drift * 1e-6 * span) - window_ps
    hi = icpt + max(0.0, drift * 1e-6 * span) + window_ps
    t_p, d_p = _differences(ta, tb, lo, hi)
    resid = d_p - (icpt + drift * 1e-6 * (t_p - a0))
    final = np.abs(resid) <= window_ps / 2
    if final.sum() < 10:
        raise AnalysisError("clock offset: too few coincident pairs to refine the offset")
    tf = t_p[final].astype(np.float64) - a0
    if np.ptp(tf) > 1e9:
        slope, c0 = np.polyfit(tf, d_p[final].astype(np.float64), 1)
        icpt, drift = float(c0), float(slope * 1e6)
    resid = d_p - (icpt + drift * 1e-6 * (t_p - a0))
    final = np.abs(resid) <= window_ps / 2
    rms = float(np.sqrt(np.mean(resid[final] ** 2))) if final.any() else float("nan")
    return ClockSync(icpt - drift * 1e-6 * a0, drift, sig, int(final.sum()), rms)


def _peak(resid: np.ndarray, half: float, bin_ps: float) -> float:
    """Location of the correlation peak among residuals in [-half, half] (histogram max, then centroid)."""
    inside = resid[np.abs(resid) <= half]
    if inside.size == 0:
        raise AnalysisError("clock offset: no coincident pairs near the coarse estimate")
    nbins = max(4, int(2 * half / bin_ps))
    hist, edges = np.histogram(inside, bins=nbins, range=(-half, half))
    k = int(np.argmax(hist))
    centre = 0.5 * (edges[k] + edges[k + 1])
    near = inside[np.abs(inside - centre) <= 1.5 * bin_ps]
    return float(np.mean(near)) if near.size else centre


class ClockTracker:
    """Follows offset and drift chunk by chunk: a first-order servo on the coincidence time differences.

    The model is anchored at the last update (t_anchor, value) with slope ``drift_ppm``; each chunk's
    median residual of nearby pairs corrects the value (gain ``gain``) and the slope.
    """

    def __init__(self, sync: ClockSync, window_ps: float = 3000.0, gain: float = 0.5):
        self.t_anchor = 0.0
        self.value = sync.offset_ps
        self.drift_ppm = sync.drift_ppm
        self.window_ps = window_ps
        self.gain = gain
        self.history: list[tuple[float, float, float]] = []  # (t_alice ps, model value there, drift ppm)

    def model(self, t_alice: float) -> float:
        return self.value + self.drift_ppm * 1e-6 * (t_alice - self.t_anchor)

    @property
    def offset_ps(self) -> float:
        return self.model(0.0)

    def update(self, alice: TagChunk, bob: TagChunk) -> float | None:
        """Returns the measured residual (ps) of this chunk, or None if it had too few pairs."""
        ta, tb = alice.timestamps, bob.timestamps
        if ta.size == 0 or tb.size == 0:
            return None
        ends = np.array([self.model(float(ta[0])), self.model(float(ta[-1]))])
        t_p, d_p = _differences(ta, tb, ends.min() - self.window_ps, ends.max() + self.window_ps)
        resid = d_p - (self.value + self.drift_ppm * 1e-6 * (t_p - self.t_anchor))
        near = np.abs(resid) <= self.window_ps / 2
        if near.sum() < 20:
            return None
        err = float(np.median(resid[near]))  # robust against the flat accidental background
        t_mid = float(np.median(t_p[near]))
        if self.history and t_mid > self.t_anchor:
            self.drift_ppm += self.gain * err / (t_mid - self.t_anchor) * 1e6
        self.value = self.model(t_mid) + self.gain * err
        self.t_anchor = t_mid
        self.history.append((t_mid, self.value, self.drift_ppm))
        return err
