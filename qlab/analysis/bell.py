"""Correlators, CHSH and visibility from coincidence counts (shared/reference/physics.md).

Raw and accidental-subtracted values are always computed and reported side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CHSH_ANGLES_DEG = {"a": 0.0, "a'": 45.0, "b": 22.5, "b'": 67.5}
CHSH_SETTINGS = [("a", "b"), ("a", "b'"), ("a'", "b"), ("a'", "b'")]
CHSH_SIGNS = [1, -1, 1, 1]


@dataclass(frozen=True)
class Counts4:
    """Coincidences of one analyzer setting pair: ++, --, +-, -+ (+ = transmitted / H port)."""

    pp: float
    mm: float
    pm: float
    mp: float

    @property
    def total(self) -> float:
        return self.pp + self.mm + self.pm + self.mp

    def minus(self, other: Counts4) -> Counts4:
        return Counts4(self.pp - other.pp, self.mm - other.mm, self.pm - other.pm, self.mp - other.mp)


def correlator(c: Counts4) -> tuple[float, float]:
    """E = (N++ + N-- - N+- - N-+)/N and its Poisson uncertainty sqrt((1 - E²)/N)."""
    n = c.total
    if n <= 0:
        return 0.0, 1.0
    e = (c.pp + c.mm - c.pm - c.mp) / n
    return e, math.sqrt(max(1.0 - e * e, 0.0) / n)


def chsh(counts: list[Counts4]) -> dict[str, float | list[float]]:
    """S = |E(a,b) - E(a,b') + E(a',b) + E(a',b')| with σ_S = sqrt(Σ σ_E²), settings in CHSH_SETTINGS order."""
    es, sig = zip(*(correlator(c) for c in counts), strict=True)
    s = abs(sum(sign * e for sign, e in zip(CHSH_SIGNS, es, strict=True)))
    s_err = math.sqrt(sum(x * x for x in sig))
    return {"S": s, "S_err": s_err, "violation_sigma": (s - 2.0) / s_err if s_err > 0 else 0.0,
            "E": list(es), "E_err": list(sig)}


def correlator_subtracted(raw: Counts4, acc: Counts4) -> tuple[float, float]:
    """E from accidental-subtracted counts and its uncertainty with both Poisson terms: every subtracted count
    raw - acc has variance raw + acc (the accidentals are measured in an independent offset window, so their
    own counting noise adds). Reduces to ``correlator`` when there are no accidentals."""
    a = raw.pp + raw.mm - acc.pp - acc.mm  # correlated outcomes
    b = raw.pm + raw.mp - acc.pm - acc.mp  # anti-correlated outcomes
    n = a + b
    if n <= 0:
        return 0.0, 1.0
    var_a = raw.pp + raw.mm + acc.pp + acc.mm
    var_b = raw.pm + raw.mp + acc.pm + acc.mp
    e = (a - b) / n
    # E = (A - B)/(A + B): dE/dA = 2B/N², dE/dB = -2A/N².
    sigma = 2.0 * math.sqrt(b * b * var_a + a * a * var_b) / (n * n)
    return e, min(sigma, 1.0e9)


def chsh_subtracted(raw: list[Counts4], acc: list[Counts4]) -> dict[str, float | list[float]]:
    """CHSH from accidental-subtracted counts (settings in CHSH_SETTINGS order); σ_S includes the variance of
    the measured accidentals (``correlator_subtracted``)."""
    es, sig = zip(*(correlator_subtracted(r, x) for r, x in zip(raw, acc, strict=True)), strict=True)
    s = abs(sum(sign * e for sign, e in zip(CHSH_SIGNS, es, strict=True)))
    s_err = math.sqrt(sum(x * x for x in sig))
    return {"S": s, "S_err": s_err, "violation_sigma": (s - 2.0) / s_err if s_err > 0 else 0.0,
            "E": list(es), "E_err": list(sig)}


def distinguishable_from_accidentals(coincidences: float, accidentals: float, sigmas: float = 3.0) -> bool:
    """True when the coincidences exceed the accidentals by more than ``sigmas`` Poisson standard deviations
    (of the difference). False means the data cannot tell a correlation from chance: no delay calibration,
    a wrong window or no source."""
    return coincidences - accidentals > sigmas * math.sqrt(max(coincidences + accidentals, 1.0))


def visibility(parallel: float, crossed: float) -> tuple[float, float]:
    """V = (N_par - N_cross)/(N_par + N_cross) with binomial uncertainty sqrt((1 - V²)/N)."""
    n = parallel + crossed
    if n <= 0:
        return 0.0, 1.0
    v = (parallel - crossed) / n
    return v, math.sqrt(max(1.0 - v * v, 0.0) / n)


def werner_chsh(visibility_: float) -> float:
    """S expected for a Werner state of visibility V: 2√2 V."""
    return 2.0 * math.sqrt(2.0) * visibility_
