"""Time-difference histograms between channels: full cross-correlation, start-stop, and g2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlab.stream.coincidence import channel_lut
from qlab.stream.kernels import cross_histogram, start_stop_histogram
from qlab.types import TagChunk


@dataclass
class Histogram:
    """Counts of t'_b - t'_a in bins of ``bin_ps`` starting at ``lo_ps`` (bin centres in ``centers_ps``)."""

    counts: np.ndarray
    lo_ps: int
    bin_ps: int

    @property
    def centers_ps(self) -> np.ndarray:
        return self.lo_ps + self.bin_ps * (np.arange(self.counts.size) + 0.5)


def _bins(range_ps: int, bin_ps: int) -> tuple[int, int]:
    if bin_ps <= 0 or range_ps <= 0:
        raise ValueError("range_ps and bin_ps must be positive")
    nbins = int(np.ceil(2 * range_ps / bin_ps))
    return -(nbins * bin_ps) // 2, nbins


def cross_correlation(chunk: TagChunk, ref: int, others: list[int], range_ps: int, bin_ps: int,
                      delays_ps: dict[int, int] | None = None) -> dict[int, Histogram]:
    """Histogram of t'_k - t'_ref over ±range_ps for every channel k in ``others`` (all pairs, one pass)."""
    channels = [ref, *[o for o in others if o != ref]]
    lut = channel_lut(channels)
    delay = np.array([(delays_ps or {}).get(ch, 0) for ch in channels], np.int64)
    lo, nbins = _bins(range_ps, bin_ps)
    scan = range_ps + int(delay.max() - delay.min())
    hist = np.zeros((len(channels), nbins), np.int64)
    cross_histogram(chunk.timestamps, chunk.channels, lut, 0, delay, lo, bin_ps, nbins, scan, hist)
    return {ch: Histogram(hist[i], lo, bin_ps) for i, ch in enumerate(channels) if i > 0}


def start_stop(chunk: TagChunk, start: int, stop: int, range_ps: int, bin_ps: int,
               delays_ps: dict[int, int] | None = None) -> Histogram:
    lut = channel_lut([start, stop])
    delay = np.array([(delays_ps or {}).get(start, 0), (delays_ps or {}).get(stop, 0)], np.int64)
    lo, nbins = _bins(range_ps, bin_ps)
    hist = np.zeros(nbins, np.int64)
    start_stop_histogram(chunk.timestamps, chunk.channels, lut, 0, 1, delay, lo, bin_ps, nbins, hist)
    return Histogram(hist, lo, bin_ps)


def g2(chunk: TagChunk, a: int, b: int, range_ps: int, bin_ps: int,
       delays_ps: dict[int, int] | None = None) -> tuple[Histogram, np.ndarray]:
    """Cross-correlation a→b normalized by the uncorrelated expectation N_a N_b bin / T."""
    h = cross_correlation(chunk, a, [b], range_ps, bin_ps, delays_ps)[b]
    na = int(np.count_nonzero(chunk.channels == a))
    nb = int(np.count_nonzero(chunk.channels == b))
    t = chunk.exposure_s * 1e12
    norm = na * nb * bin_ps / t if t > 0 else 0.0
    return h, (h.counts / norm if norm > 0 else np.zeros(h.counts.size))
