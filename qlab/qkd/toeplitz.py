"""Toeplitz hashing over GF(2) in O(n log n): privacy amplification and verification hashes.

y = T x with T an (m × n) Toeplitz matrix given by n + m - 1 seed bits. Each y_i is the parity of a
sliding window of the linear convolution seed ⊛ x, computed exactly by float FFTs (the integer
convolution values stay far below 2^53) in overlap-add blocks to bound memory.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from qlab.abort import check_abort

BLOCK = 1 << 22
SINGLE_SHOT_MAX = 1 << 28  # one FFT convolution up to this length (~10 GB of float buffers at the top end)


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
    out = np.zeros(m, np.int64)
    block = min(BLOCK, max(1024, 1 << int(np.ceil(np.log2(max(n, 2))))))
    xf = x.astype(np.float64)
    for j0 in range(0, n, block):
        check_abort()  # long hashes stop between blocks when the run is aborted
        xj = xf[j0:j0 + block]
        # Contributions of x[j0:j0+B] to outputs i need s indices i - j + n - 1 for j in the block.
        s_lo = max(0, n - 1 - (j0 + xj.size - 1))
        s_hi = min(s.size, m - 1 + n - 1 - j0 + 1)
        seg = s[s_lo:s_hi].astype(np.float64)
        size = fft.next_fast_len(seg.size + xj.size - 1, real=True)
        conv = fft.irfft(fft.rfft(seg, size) * fft.rfft(xj, size), size)[: seg.size + xj.size - 1]
        # conv[k] = sum_t seg[k - t] xj[t]  ->  output index i = k + s_lo + j0 - (n - 1)
        i0 = s_lo + j0 - (n - 1)
        k_lo = max(0, -i0)
        k_hi = min(conv.size, m - i0)
        if k_hi > k_lo:
            out[i0 + k_lo:i0 + k_hi] += np.rint(conv[k_lo:k_hi]).astype(np.int64)
    return (out & 1).astype(np.uint8)


def seed_from(rng: np.random.Generator, n_bits: int) -> np.ndarray:
    return rng.integers(0, 2, n_bits, dtype=np.uint8)
