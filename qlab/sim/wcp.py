"""The physics of prepare-and-measure BB84 with a weak-coherent decoy-state transmitter, on the simulated
lab's Bob side. The protocol halves (source parameters, Alice's choices, Bob's slotting) are in
``qlab.qkd.decoy_bb84``.

Alice's transmitter (laser, intensity and polarization modulators, QRNG) has no driver in qlab; in the
simulated lab it is this model, reached by procedures only through ``SimulatedBb84Transmitter`` (the lab's
``simulation_service("bb84_transmitter")``). The choices of pulse i come from Alice's QRNG key
(``alice_choices``).

Each pulse is a coherent state: the photon numbers reaching Bob's four detectors are independent Poisson
variables (thinning through the fibre, his passive 50/50 basis splitter, the analyzer with misalignment
``misalignment`` and the detector efficiency), plus each detector's dark counts inside a ``gate_ps``
window. Every click becomes a tag on Bob's tagger input at ``index × period + cable delay + jitter``.
Detector dead time is not modelled here (≤ 1 % at the default rates).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qlab.errors import QlabError
from qlab.qkd.decoy_bb84 import PORT_BASIS_BIT, DecoySource, alice_choices
from qlab.qkd.finite_key import plob_bound
from qlab.types import TagChunk


class WeakCoherentBB84:
    """Alice's pulses through the lab's fibre to Bob's passive-basis receiver (his four detectors)."""

    chunk_pulses = 1 << 21

    def __init__(self, lab: Any, source: DecoySource, alice_key: int,
                 seed: int | np.random.SeedSequence | None):
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


class SimulatedBb84Transmitter:
    """The simulated lab's decoy-state transmitter as a service: Alice's pulses through Bob's fibre to his
    detectors, returned as the tags his tagger would record. Remembers the last transmission so the
    simulation can report the channel's PLOB bound as simulation truth (``truth``)."""

    def __init__(self, sim: Any):
        self.sim = sim
        self._last: tuple[DecoySource, int] | None = None

    def transmit(self, source: DecoySource, alice_key: int, duration_s: float,
                 seed: int | np.random.SeedSequence | None = None) -> tuple[TagChunk, int, int]:
        """Bob's tags for ``duration_s`` s of pulses chosen under ``alice_key``: (chunk, first pulse index,
        number of pulses). ``seed`` seeds the channel's randomness (fresh from the OS when None).
        Raises QlabError when the lab lacks Bob's four detectors."""
        try:
            tx = WeakCoherentBB84(self.sim, source, alice_key, seed=seed)
        except ValueError as exc:
            raise QlabError(str(exc)) from None
        chunk, first, n_pulses = tx.transmit(duration_s)
        self._last = (source, n_pulses)
        return chunk, first, n_pulses

    def truth(self) -> dict[str, Any]:
        """The repeaterless bound of Bob's fibre for the last transmission ({} before the first one)."""
        if self._last is None:
            return {}
        source, n_pulses = self._last
        eta = float(self.sim.fibre_transmission["bob"])
        per_pulse = plob_bound(eta)
        return {"rep_rate_hz": source.rep_rate_hz, "pulses": n_pulses, "fibre_transmission": eta,
                "plob_bits_per_pulse": per_pulse, "plob_bound_bps": per_pulse * source.rep_rate_hz}
