"""The protocol halves of decoy-state BB84 with a weak-coherent transmitter (no physics here).

Alice's transmitter draws every pulse's choices (basis, bit, intensity class) from a Philox counter-mode
stream under her 128-bit secret QRNG key, so her party recomputes the choices of the pulses Bob reports
without storing every pulse (``alice_choices``). Bob assigns each click to a pulse slot after removing his
inputs' delays, squashing multi-clicks (``pulse_slots``). ``DecoySource`` holds the transmitter's
parameters both halves agree on; the physical transmission lives with the transmitter (on the simulated
lab, the weak-coherent model of the simulation package).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qlab.qkd.squash import squash_groups
from qlab.types import TagChunk

PORT_BASIS_BIT = {"H": (0, 0), "V": (0, 1), "D": (1, 0), "A": (1, 1)}


@dataclass(frozen=True)
class DecoySource:
    """Parameters of a decoy-state transmitter. Raises ValueError on inconsistent values."""

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


PHILOX_WINDOW = 1 << 20  # pulses whose choices are generated at a time (a multiple of 4; 8 MiB of outputs)


def alice_choices(key: int, source: DecoySource, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(basis 0=Z 1=X, bit, intensity class 0..2) Alice chose for the pulses ``index``; ``key`` is her secret
    128-bit QRNG key."""
    index = np.asarray(index, np.int64)
    if index.size == 0:
        z = np.zeros(0, np.uint8)
        return z, z, z
    # Philox is counter-based: the outputs of each window of PHILOX_WINDOW pulses that holds a wanted index are
    # generated from that window's counter on, so memory stays one window whatever the pulse span.
    raw = np.empty(index.size, np.uint64)
    window = index // PHILOX_WINDOW
    order = np.argsort(window, kind="stable")
    bounds = np.flatnonzero(np.diff(window[order])) + 1
    for group in np.split(order, bounds):
        start = int(window[group[0]]) * PHILOX_WINDOW
        gen = np.random.Philox(key=key)
        gen.advance(start // 4)  # Philox yields four 64-bit outputs per counter step
        raw[group] = gen.random_raw(int(index[group].max()) - start + 1)[index[group] - start]
    u_basis = (raw & np.uint64(0xFFFFFF)).astype(np.float64) / 16777216.0
    bit = ((raw >> np.uint64(24)) & np.uint64(1)).astype(np.uint8)
    u_int = (raw >> np.uint64(32)).astype(np.float64) / 4294967296.0
    cls = np.searchsorted(np.cumsum(source.probabilities)[:-1], u_int, side="right").astype(np.uint8)
    return (u_basis >= source.p_z).astype(np.uint8), bit, cls


def pulse_slots(chunk: TagChunk, port_of_input: dict[int, str], delay_of_input: dict[int, int], period_ps: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bob's clicks per pulse slot: (pulse index, basis, bit). Each input's delay (ps) is removed before
    slotting. Several clicks in one slot are squashed as BBM92's clicks are (``squash_groups``: one basis → a
    random bit in it, both bases → a random basis and bit, one detector twice → its bit), with Bob's private
    randomness from the OS CSPRNG."""
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
    uniq, start = np.unique(slot, return_index=True)
    if uniq.size == 0:
        return uniq.astype(np.int64), det[:0].copy(), det[:0].copy()
    basis, bit, _ = squash_groups(det, start)
    return uniq.astype(np.int64), basis, bit
