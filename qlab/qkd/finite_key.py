"""Secret key length: finite-key bound of Tomamichel, Lim, Gisin & Renner (Nat. Commun. 3:634, 2012).

ℓ = n (1 - h(Q + μ)) - leak_EC - log2(2 / (ε_sec² ε_cor)),
μ = sqrt((n + k)/(n k) · (k + 1)/k · ln(4/ε_sec)), with n key bits and k test bits; Q is the tolerated error
rate fixed before the run. μ carries ln(4/ε_sec) as in the arXiv derivation (1103.4130), which fits the
-log2(2/(ε_sec² ε_cor)) term; the journal's ln(2/ε_sec) gives 0.1–1.5 % longer keys than is safe.
"""

from __future__ import annotations

import math


def h2(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


def statistical_deviation(n: int, k: int, eps_sec: float) -> float:
    if n <= 0 or k <= 0:
        return float("inf")
    return math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(4.0 / eps_sec))


def key_length(n: int, k: int, q_test: float, leak_ec_bits: float, eps_sec: float, eps_cor: float) -> int:
    """Length of the secret key (bits, ≥ 0) from n reconciled key bits, k test bits, tolerated error rate
    ``q_test`` and ``leak_ec_bits`` revealed about the key."""
    mu = statistical_deviation(n, k, eps_sec)
    q = q_test + mu
    if q >= 0.5:
        return 0
    ell = n * (1.0 - h2(q)) - leak_ec_bits - math.log2(2.0 / (eps_sec**2 * eps_cor))
    return max(0, int(math.floor(ell)))


def plob_bound(transmissivity: float) -> float:
    """Repeaterless bound: secret bits per channel use, -log2(1 - η)."""
    if transmissivity >= 1.0:
        return float("inf")
    return -math.log2(1.0 - transmissivity)
