"""Prepare-and-measure BB84 with a weak-coherent decoy-state transmitter, on the simulated lab's Bob side.

Alice's transmitter (laser, intensity and polarization modulators, QRNG) has no driver in qlab; in the
simulated lab it is this model. Its QRNG stands in as a Philox counter-mode stream under a 128-bit secret
key: the choices of pulse i (basis, bit, intensity) come from output i, so Alice's party recomputes them for
the pulses Bob reports without storing every pulse.
Each pulse is a coherent state: the photon numbers reaching Bob's four detectors are independent Poisson
variables (thinning through the fibre, his passive 50/50 basis splitter, the analyzer with misalignment
``misalignment`` and the detector efficiency), plus each detector's dark counts inside a ``gate_ps``
window. Every click becomes a tag on Bob's tagger input at ``index × period + cable delay + jitter``.
Detector dead time is not modelled here (≤ 1 % at the default rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qlab.types import TagChunk

PORT_BASIS_BIT = {"H": (0, 0), "V": (0, 1), "D": (1, 0), "A": (1, 1)}


@dataclass(frozen=True)
class DecoySource:
    rep_rate_hz: float = 10e6
    intensities: tuple[float, float, float] = (0.5, 0.1, 0.0002)  # mean photons per pulse: signal, decoy, weak
    probabilities: tuple[float, float, float] = (0.7, 0.15, 0.15)
    p_z: float = 0.5  # Alice's probability of the Z (H/V) basis
    misalignment: float = 0.01  # probability a photon exits the wrong port of the matching analyzer
    gate_ps: int = 1000  # window around the pulse slot in which a dark count is attributed to the pulse

    def __post_init__(self) -> None:
        m1, m2, m3 = self.intensities
        if not (m1 > m2 + m3 and m2 > m3 >= 0):
            raise ValueError(f"decoy intensities {self.intensities} must satisfy μ1 > μ2 + μ3 and μ2 > μ3 ≥ 0")
        if abs(sum(self.probabilities) - 1) > 1e-9 or min(self.probabilities) <= 0:
            raise ValueError(f"intensity probabilities {self.probabilities} must be positive and sum to 1")
        if not 0 < self.p_z < 1 or not 0 <= self.misalignment <= 0.5:
            raise ValueError(f"p_z {self.p_z} must be in (0, 1) and misalignment {self.misalignment} in [0, 0.5]")

    @property
    def period_ps(self) -> int:
        return int(round(1e12 / self.rep_rate_hz))


def alice_choices(key: int, source: DecoySource, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(basis 0=Z 1=X, bit, intensity class 0..2) Alice chose for the pulses ``index``; ``key`` is her secret
    128-bit QRNG key."""
    index = np.asarray(index, np.int64)
    if index.size == 0:
        z = np.zeros(0, np.uint8)
        return z, z, z
    first = int(index.min()) // 4 * 4  # Philox yields four 64-bit outputs per counter step
    gen = np.random.Philox(key=key)
    gen.advance(first // 4)
    raw = gen.random_raw(int(index.max()) - first + 1)[index - first]
    u_basis = (raw & np.uint64(0xFFFFFF)).astype(np.float64) / 16777216.0
    bit = ((raw >> np.uint64(24)) & np.uint64(1)).astype(np.uint8)
    u_int = (raw >> np.uint64(32)).astype(np.float64) / 4294967296.0
    cls = np.searchsorted(np.cumsum(source.probabilities)[:-1], u_int, side="right").astype(np.uint8)
    return (u_basis >= source.p_z).astype(np.uint8), bit, cls


class WeakCoherentBB84:
    """Alice's pulses through the lab's fibre to Bob's passive-basis receiver (his four detectors)."""

    chunk_pulses = 1 << 21

    def __init__(self, lab, source: DecoySource, alice_key: int, seed: int | np.random.SeedSequence):
        self.lab, self.source, self.alice_key = lab, source, int(alice_key)
        self.rng = np.random.default_rng(seed)
        self.bob = {}
        for det in lab.detectors.values():
            if det.party == "bob" and det.port in PORT_BASIS_BIT:
                self.bob[det.port] = det
        missing = set(PORT_BASIS_BIT) - set(self.bob)
        if missing:
            raise ValueError(f"BB84 needs Bob's detectors {sorted(missing)} (roles bob.H/V/D/A)")
        self.next_index = 0

    def detection_probabilities(self) -> np.ndarray:
        """P(click) of each Bob detector [H, V, D, A] for Alice's (basis, bit, intensity): shape (2, 2, 3, 4)."""
        src, e = self.source, self.source.misalignment
        out = np.zeros((2, 2, 3, 4))
        for b in range(2):
            for v in range(2):
                for k, mu in enumerate(src.intensities):
                    for j, port in enumerate("HVDA"):
                        det = self.bob[port]
                        db, dv = PORT_BASIS_BIT[port]
                        share = (1 - e if dv == v else e) if db == b else 0.5
                        mean = mu * 0.5 * share * self.lab.detector_efficiency(det)
                        dark = det.p.dark_count_hz * src.gate_ps * 1e-12 if self.lab._det_visible(det) else 0.0
                        out[b, v, k, j] = 1 - math.exp(-mean) * (1 - dark)
        return out

    def transmit(self, duration_s: float) -> tuple[TagChunk, int, int]:
        """Bob's tags for ``duration_s`` of pulses: (chunk, first pulse index, number of pulses)."""
        src = self.source
        n_total = int(round(duration_s * src.rep_rate_hz))
        first = self.next_index
        prob = self.detection_probabilities()
        inputs = np.array([self.bob[p].input for p in "HVDA"], np.int16)
        delay = np.array([self.bob[p].p.cable_delay_ps for p in "HVDA"], float)
        jitter = np.array([self.bob[p].p.jitter_ps for p in "HVDA"], float)
        ts, chs = [], []
        for start in range(first, first + n_total, self.chunk_pulses):
            idx = np.arange(start, min(start + self.chunk_pulses, first + n_total), dtype=np.int64)
            basis, bit, cls = alice_choices(self.alice_key, src, idx)
            p = prob[basis, bit, cls]  # (pulses, 4)
            clicks = self.rng.random(p.shape) < p
            pulse, det = np.nonzero(clicks)
            t = idx[pulse] * src.period_ps + delay[det] + self.rng.normal(0.0, 1.0, det.size) * jitter[det]
            ts.append(np.round(t).astype(np.int64))
            chs.append(inputs[det])
        self.next_index = first + n_total
        t_all = np.concatenate(ts) if ts else np.zeros(0, np.int64)
        c_all = np.concatenate(chs) if chs else np.zeros(0, np.int16)
        order = np.argsort(t_all, kind="stable")
        chunk = TagChunk(t_all[order], c_all[order], first * src.period_ps, (first + n_total) * src.period_ps)
        return chunk, first, n_total


def pulse_slots(chunk: TagChunk, port_of_input: dict[int, str], delay_of_input: dict[int, int], period_ps: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bob's clicks per pulse slot: (pulse index, basis, bit). Each input's delay (ps, from calibration) is
    removed before slotting. Several clicks in one slot are squashed: one basis → a random bit in it; both
    bases → a random basis and bit (the standard squashing map). ``rng`` must be Bob's private randomness."""
    lut = np.full(65536, 255, np.uint8)
    delay = np.zeros(65536, np.int64)
    for inp, port in port_of_input.items():
        lut[inp] = "HVDA".index(port)
        delay[inp] = int(delay_of_input.get(inp, 0))
    ch = chunk.channels.astype(np.int64) & 0xFFFF
    det = lut[ch]
    keep = det != 255
    slot = np.floor_divide(chunk.timestamps[keep] - delay[ch[keep]] + period_ps // 2, period_ps)
    det = det[keep]
    order = np.argsort(slot, kind="stable")
    slot, det = slot[order], det[order]
    uniq, start, count = np.unique(slot, return_index=True, return_counts=True)
    det_basis = (det // 2).astype(np.uint8)
    basis = det_basis[start].copy()
    bit = (det[start] % 2).astype(np.uint8)
    multi = count > 1  # multi-photon pulses and dark coincidences
    if multi.any():
        lo = np.minimum.reduceat(det_basis, start)
        hi = np.maximum.reduceat(det_basis, start)
        both = multi & (lo != hi)
        basis[both] = rng.integers(0, 2, int(both.sum()), dtype=np.uint8)
        bit[multi] = rng.integers(0, 2, int(multi.sum()), dtype=np.uint8)
    return uniq.astype(np.int64), basis, bit
