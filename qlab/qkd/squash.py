"""Squashing of one party's clicks into detection events (the standard BB84 squashing map).

Clicks of one party closer than ``merge_ps`` form one event. A single click gives its detector's basis and
bit; several clicks in one basis give that basis and a random bit; clicks in both bases give a random basis
and a random bit. The random choices come from the OS CSPRNG: they are the party's private randomness and
must be neither reproducible nor discarded (dropping multi-click events lets detection depend on basis).
"""

from __future__ import annotations

import os

import numpy as np


def csprng_bits(n: int) -> np.ndarray:
    """``n`` uniform bits (uint8 0/1) from the OS CSPRNG."""
    if n <= 0:
        return np.zeros(0, np.uint8)
    return np.unpackbits(np.frombuffer(os.urandom((n + 7) // 8), np.uint8))[:n]


def squash(times_ps: np.ndarray, ports: np.ndarray, merge_ps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                              int]:
    """Events of one party's time-sorted clicks (ports 0..3 = H, V, D, A).

    Returns (event time ps = its first click, basis 0=Z 1=X, bit, number of multi-click events)."""
    t = np.asarray(times_ps, np.int64)
    p = np.asarray(ports, np.uint8)
    if t.size == 0:
        return t, p.copy(), p.copy(), 0
    start = np.flatnonzero(np.concatenate([[True], np.diff(t) > merge_ps]))
    basis, bit, n_multi = squash_groups(p, start)
    return t[start], basis, bit, n_multi


def squash_groups(ports: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The squashing map on groups of clicks: ``ports`` (0..3 = H, V, D, A) grouped by event, each group
    beginning at the indices ``start``. Returns (basis, bit, number of multi-click events) per group."""
    p = np.asarray(ports, np.uint8)
    basis = (p[start] // 2).astype(np.uint8)
    bit = (p[start] % 2).astype(np.uint8)
    pmin, pmax = np.minimum.reduceat(p, start), np.maximum.reduceat(p, start)
    multi = pmin != pmax  # clicks of more than one detector (a detector clicking twice is still one port)
    n_multi = int(np.count_nonzero(multi))
    if n_multi:
        mixed = (pmin // 2) != (pmax // 2)
        basis[mixed] = csprng_bits(int(mixed.sum()))
        bit[multi] = csprng_bits(n_multi)
    return basis, bit, n_multi
