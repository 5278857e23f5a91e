"""Toeplitz hashing over GF(2) in O(n log n): privacy amplification and verification hashes.

y = T x with T an (m × n) Toeplitz matrix given by n + m - 1 seed bits. Each y_i is the parity of a
sliding window of the linear convolution seed ⊛ x, computed exactly by float FFTs (the integer
convolution values stay far below 2^53). Long inputs go in square blocks of L bits whose spectra are summed
per output block (``_blocked``), which bounds memory to a few FFT buffers of 3L points (about 2.6 GB peak for 10^8
bits) at about twice the transform work of one whole-length convolution.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from qlab.abort import check_abort

BLOCK = 1 << 23  # bits per block of the blocked path (FFT length ~3 BLOCK); 2^24 peaked at 3.7-4.3 GB for 10^8 bits
SINGLE_SHOT_MAX = 1 << 26  # one FFT convolution up to this length (~3 GB of float buffers at the top end)


def toeplitz_hash(bits: np.ndarray, seed_bits: np.ndarray, out_len: int) -> np.ndarray:
    """m = out_len bits of T·bits (mod 2), T_ij = seed[i - j + n - 1]; ``seed_bits`` has n + m - 1 bits."""
    x = np.asarray(bits, np.uint8)
    n, m = x.size, int(out_len)
    if m <= 0:
        return np.zeros(0, np.uint8)
    s = np.asarray(seed_bits, np.uint8)
    if s.size != n + m - 1:
        raise ValueError(f"Toeplitz seed needs {n + m - 1} bits, got {s.size}")
    # y_i = sum_j s[i - j + n - 1] x_j = (s ⊛ x)[i + n - 1] for i in [0, m).
    check_abort()
    if s.size + n - 1 <= SINGLE_SHOT_MAX:
        size = fft.next_fast_len(s.size + n - 1, real=True)
        conv = fft.irfft(fft.rfft(s.astype(np.float64), size, workers=-1)
                         * fft.rfft(x.astype(np.float64), size, workers=-1), size, workers=-1)
        return (np.rint(conv[n - 1:n - 1 + m]).astype(np.int64) & 1).astype(np.uint8)
    return _blocked(x, s, m, BLOCK)


def _blocked(x: np.ndarray, s: np.ndarray, m: int, block: int) -> np.ndarray:
    """y = T x for long inputs: x in blocks x_j of ``block`` bits, outputs in blocks y_i of ``block`` bits.
    y_i = sum_j seg_{i,j} ⊛ x_j (valid part), where seg_{i,j} is the 2 block - 1 seed bits those blocks
    touch; the sum is taken over spectra, so each output block needs one inverse FFT and each x block one
    forward FFT, and only the ceil(m / block) accumulated spectra stay in memory."""
    n = x.size
    size = fft.next_fast_len(3 * block - 2, real=True)  # linear convolution of 2 block - 1 and block points
    starts = range(0, m, block)
    acc = [np.zeros(size // 2 + 1, np.complex128) for _ in starts]
    seg = np.zeros(2 * block - 1, np.float64)
    for j0 in range(0, n, block):
        check_abort()  # long hashes stop between blocks when the run is aborted
        xj = fft.rfft(x[j0:j0 + block].astype(np.float64), size, workers=-1)
        for bi, i0 in enumerate(starts):
            # seed indices i - j + n - 1 for i in [i0, i0 + block), j in [j0, j0 + block)
            lo = i0 - j0 - block + 1 + n - 1
            a, b = max(lo, 0), min(lo + seg.size, s.size)
            seg[:] = 0.0
            if b > a:
                seg[a - lo:b - lo] = s[a:b]
            spectrum = fft.rfft(seg, size, workers=-1)
            spectrum *= xj  # in place: no third spectrum-sized temporary
            acc[bi] += spectrum
            del spectrum
    out = np.empty(m, np.uint8)
    for bi, i0 in enumerate(starts):
        check_abort()
        conv = fft.irfft(acc[bi], size, workers=-1)
        acc[bi] = np.zeros(0, np.complex128)  # free the spectrum as soon as it is used
        k = min(block, m - i0)
        # output i0 + q sits at convolution index q + block - 1
        out[i0:i0 + k] = (np.rint(conv[block - 1:block - 1 + k]).astype(np.int64) & 1).astype(np.uint8)
    return out


def seed_from(rng: np.random.Generator, n_bits: int) -> np.ndarray:
    return rng.integers(0, 2, n_bits, dtype=np.uint8)
