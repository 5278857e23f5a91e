"""Finite-key length of decoy-state BB84 with three intensities: Lim, Ci, Curty & Zbinden, PRA 89, 022307
(2014). Counts are detections where both parties used the basis, per intensity μ1 > μ2 + μ3, μ2 > μ3 ≥ 0.

Hoeffding-corrected counts  n±_k = e^{μk}/p_k · (n_k ± sqrt(n/2 · ln(21/ε_sec)))  (n = Σ_k n_k),
vacuum and single-photon detection lower bounds s_0, s_1, single-photon X-error upper bound v_1, phase
error φ_Z = v_1/s_X1 + γ(ε_sec, v_1/s_X1, s_Z1, s_X1) and

    ℓ = s_Z0 + s_Z1 (1 − h(φ_Z)) − λ_EC − 6 log2(21/ε_sec) − log2(2/ε_cor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qlab.qkd.finite_key import h2


@dataclass(frozen=True)
class DecoyCounts:
    intensities: tuple[float, float, float]  # mean photon numbers μ1 (signal), μ2 (decoy), μ3 (weak decoy/vacuum)
    probabilities: tuple[float, float, float]  # how often Alice sends each
    n_z: tuple[int, int, int]  # sifted Z detections per intensity
    n_x: tuple[int, int, int]  # sifted X detections per intensity
    m_x: tuple[int, int, int]  # X bit errors per intensity


@dataclass(frozen=True)
class DecoyBounds:
    s_z0: float
    s_z1: float
    s_x0: float
    s_x1: float
    v_x1: float
    phi_z: float


def _tau(n: int, mu: tuple[float, ...], p: tuple[float, ...]) -> float:
    """Probability that Alice sends an n-photon state."""
    return sum(pk * math.exp(-m) * m**n / math.factorial(n) for m, pk in zip(mu, p, strict=True))


def _corrected(counts: tuple[int, ...], mu: tuple[float, ...], p: tuple[float, ...], eps_sec: float,
               sign: int) -> list[float]:
    delta = math.sqrt(sum(counts) / 2 * math.log(21 / eps_sec))
    return [math.exp(m) / pk * (c + sign * delta) for c, m, pk in zip(counts, mu, p, strict=True)]


def _vacuum_and_single(counts: tuple[int, ...], mu: tuple[float, ...], p: tuple[float, ...],
                       eps_sec: float) -> tuple[float, float]:
    m1, m2, m3 = mu
    lo = _corrected(counts, mu, p, eps_sec, -1)
    hi = _corrected(counts, mu, p, eps_sec, +1)
    t0, t1 = _tau(0, mu, p), _tau(1, mu, p)
    s0 = max(0.0, t0 * (m2 * lo[2] - m3 * hi[1]) / (m2 - m3))
    s1 = t1 * m1 * (lo[1] - hi[2] - (m2**2 - m3**2) / m1**2 * (hi[0] - s0 / t0)) / (m1 * (m2 - m3) - m2**2 + m3**2)
    return s0, max(0.0, s1)


def _gamma(a: float, b: float, c: float, d: float) -> float:
    if c <= 0 or d <= 0 or b >= 1:
        return 0.5
    if b <= 0:
        return 0.0  # the limit b → 0 of the expression below
    arg = (c + d) / (c * d * (1 - b) * b) * (21 / a) ** 2
    return math.sqrt((c + d) * (1 - b) * b / (c * d * math.log(2)) * math.log2(arg))


def decoy_bounds(c: DecoyCounts, eps_sec: float) -> DecoyBounds:
    mu, p = c.intensities, c.probabilities
    if not (mu[0] > mu[1] + mu[2] and mu[1] > mu[2] >= 0):
        raise ValueError(f"intensities {mu} must satisfy μ1 > μ2 + μ3 and μ2 > μ3 ≥ 0")
    s_z0, s_z1 = _vacuum_and_single(c.n_z, mu, p, eps_sec)
    s_x0, s_x1 = _vacuum_and_single(c.n_x, mu, p, eps_sec)
    m_hi = _corrected(c.m_x, mu, p, eps_sec, +1)
    m_lo = _corrected(c.m_x, mu, p, eps_sec, -1)
    v_x1 = max(0.0, _tau(1, mu, p) * (m_hi[1] - m_lo[2]) / (mu[1] - mu[2]))
    if s_x1 <= 0 or s_z1 <= 0:
        phi = 0.5
    else:
        ratio = min(v_x1 / s_x1, 0.5)
        phi = min(0.5, ratio + _gamma(eps_sec, ratio, s_z1, s_x1))
    return DecoyBounds(s_z0, s_z1, s_x0, s_x1, v_x1, phi)


def decoy_key_length(c: DecoyCounts, leak_ec_bits: float, eps_sec: float, eps_cor: float) -> tuple[int, DecoyBounds]:
    """(secret bits ≥ 0, the bounds behind them)."""
    b = decoy_bounds(c, eps_sec)
    ell = (b.s_z0 + b.s_z1 * (1 - h2(b.phi_z)) - leak_ec_bits - 6 * math.log2(21 / eps_sec)
           - math.log2(2 / eps_cor))
    return max(0, int(math.floor(ell))), b
