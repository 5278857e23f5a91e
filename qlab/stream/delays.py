"""Find per-channel delays from raw streams by cross-correlation, with the peak's significance.

A pair source correlates channels of *different* parties only (one party's detectors never see the same
photon), so channels that show no peak against the reference are resolved through a channel already
found: delay_k = delay_m + Δ(k vs m).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlab.errors import AnalysisError
from qlab.stream.histogram import Histogram, cross_correlation
from qlab.types import TagChunk


@dataclass
class Peak:
    offset_ps: float  # centroid of t_k - t_ref at the peak
    height: int
    background: float
    significance: float  # (peak - background)/sqrt(background + 1), in σ


def find_peak(h: Histogram, width_bins: int = 3) -> Peak:
    counts = h.counts.astype(float)
    i = int(np.argmax(counts))
    bg = float(np.median(counts))
    lo, hi = max(0, i - width_bins), min(counts.size, i + width_bins + 1)
    w = np.clip(counts[lo:hi] - bg, 0, None)
    centres = h.centers_ps[lo:hi]
    offset = float((w * centres).sum() / w.sum()) if w.sum() > 0 else float(h.centers_ps[i])
    sig = (counts[i] - bg) / np.sqrt(bg + 1.0)
    return Peak(offset, int(counts[i]), bg, float(sig))


def find_delays(chunk: TagChunk, channels: list[int], reference: int | None = None, range_ps: int = 200_000,
                coarse_bin_ps: int = 200, fine_bin_ps: int = 10, min_sigma: float = 8.0
                ) -> tuple[dict[int, float], dict[int, float]]:
    """Delay of every channel relative to ``reference`` (positive = that channel's tags come later).

    Returns (delays_ps, peak_sigma). Raises AnalysisError naming the channels without a significant peak.
    """
    ref = channels[0] if reference is None else reference
    delays: dict[int, float] = {ref: 0.0}
    sigma: dict[int, float] = {ref: float("inf")}
    pending = [c for c in channels if c != ref]
    anchors = [ref]
    while pending and anchors:
        anchor = anchors.pop(0)
        coarse = cross_correlation(chunk, anchor, pending, range_ps, coarse_bin_ps)
        found = []
        for ch in pending:
            pk = find_peak(coarse[ch])
            if pk.significance < min_sigma:
                continue
            # Refine with fine bins around the coarse peak.
            shift = {ch: int(round(pk.offset_ps))}
            fine_range = max(4 * coarse_bin_ps, 3000)  # covers a peak broadened by ~0.5 ns RMS jitter
            fine = cross_correlation(chunk, anchor, [ch], fine_range, fine_bin_ps, shift)[ch]
            fpk = find_peak(fine, width_bins=max(3, int((fine_range * 2 // 3) / fine_bin_ps)))
            delays[ch] = delays[anchor] + pk.offset_ps + fpk.offset_ps
            sigma[ch] = pk.significance
            found.append(ch)
        pending = [c for c in pending if c not in found]
        anchors += found
    if pending:
        raise AnalysisError(f"no significant correlation peak (≥ {min_sigma} σ within ±{range_ps} ps) for "
                            f"channel(s) {pending}; is the source on and are they wired?")
    return delays, sigma
