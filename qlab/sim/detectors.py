"""Simulated single-photon detectors: their state, whether their pulses reach a tagger, their detection
efficiency, and the click-rate formulas (analytic expectations and the category table of the generator).
Rates in Hz, times in ns/ps as named. Formulas: shared/reference/physics.md."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from qlab.config.schema import DetectorSim
from qlab.sim.optical import OpticalState
from qlab.sim.taggers import TaggerState

DETECTOR_PULSE_V = 2.5  # NIM/TTL pulse height seen by the tagger; trigger levels must sit below it


@dataclass
class DetectorState:
    name: str
    party: str
    port: str
    tagger: str
    input: int
    p: DetectorSim
    enabled: bool = True
    gate_closed: bool = False
    efficiency: float = 0.0
    dead_time_ns: float = 0.0

    def __post_init__(self) -> None:
        self.efficiency = self.p.efficiency
        self.dead_time_ns = self.p.dead_time_ns
        self.gate_closed = self.p.gate

    @property
    def live(self) -> bool:
        return self.enabled and not self.gate_closed


def visible(det: DetectorState, taggers: Mapping[str, TaggerState]) -> bool:
    """The detector clicks and its tagger input's trigger level sits inside the pulse height."""
    level = taggers[det.tagger].trigger_v.get(det.input, 0.5)
    return det.live and 0.0 < level < DETECTOR_PULSE_V


def efficiency(det: DetectorState, optics: OpticalState, taggers: Mapping[str, TaggerState]) -> float:
    """Total detection probability of a photon reaching this detector's port (fibre × detector)."""
    if not visible(det, taggers):
        return 0.0
    return optics.fibre_transmission[det.party] * det.efficiency


def expected_rates(optics: OpticalState, detectors: Mapping[str, DetectorState],
                   taggers: Mapping[str, TaggerState]) -> dict[str, object]:
    """Singles (before dead time) and true-coincidence rates in Hz from physics.md formulas."""
    ports_a, ports_b, p = optics.port_probabilities()
    n = optics.pair_rate_hz()
    eff = {d.name: efficiency(d, optics, taggers) for d in detectors.values()}
    singles, coinc = {}, {}
    for d in detectors.values():
        ports = ports_a if d.party == "alice" else ports_b
        marg = p.sum(axis=1) if d.party == "alice" else p.sum(axis=0)
        pi = marg[ports.index(d.port)] if d.port in ports else 0.0
        singles[d.name] = eff[d.name] * n * pi + (d.p.dark_count_hz if visible(d, taggers) else 0.0)
    for da in detectors.values():
        for db in detectors.values():
            if da.party == "alice" and db.party == "bob" and da.port in ports_a and db.port in ports_b:
                pab = p[ports_a.index(da.port), ports_b.index(db.port)]
                coinc[(da.name, db.name)] = eff[da.name] * eff[db.name] * n * pab
    return {"pair_rate_hz": n, "singles_hz": singles, "coincidences_hz": coinc}


def click_categories(optics: OpticalState, dets: list[DetectorState], taggers: Mapping[str, TaggerState],
                     ) -> tuple[list[float], list[int], list[int]]:
    """The click process as independent Poisson categories: (rate Hz, first detector index, second detector
    index or -1) for every pair of ports, every one-sided detection and every dark count."""
    ports_a, ports_b, p = optics.port_probabilities()
    idx_a = {d.port: i for i, d in enumerate(dets) if d.party == "alice"}
    idx_b = {d.port: i for i, d in enumerate(dets) if d.party == "bob"}
    eff = np.array([efficiency(d, optics, taggers) for d in dets])
    ea = np.array([eff[idx_a[k]] if k in idx_a else 0.0 for k in ports_a])
    eb = np.array([eff[idx_b[k]] if k in idx_b else 0.0 for k in ports_b])
    n = optics.pair_rate_hz()
    rates, cat_a, cat_b = [], [], []
    for k, pk in enumerate(ports_a):
        for l, pl in enumerate(ports_b):
            if k < len(ea) and ea[k] > 0 and eb[l] > 0:
                rates.append(n * p[k, l] * ea[k] * eb[l])
                cat_a.append(idx_a[pk])
                cat_b.append(idx_b[pl])
        r_only = n * ea[k] * float((p[k, :] * (1 - eb)).sum())
        if r_only > 0:
            rates.append(r_only)
            cat_a.append(idx_a[pk])
            cat_b.append(-1)
    for l, pl in enumerate(ports_b):
        r_only = n * eb[l] * float((p[:, l] * (1 - ea)).sum())
        if r_only > 0:
            rates.append(r_only)
            cat_a.append(idx_b[pl])
            cat_b.append(-1)
    for i, d in enumerate(dets):
        if visible(d, taggers) and d.p.dark_count_hz > 0:
            rates.append(d.p.dark_count_hz)
            cat_a.append(i)
            cat_b.append(-1)
    return rates, cat_a, cat_b


def timing_arrays(dets: list[DetectorState], taggers: Mapping[str, TaggerState]) -> tuple[np.ndarray, np.ndarray]:
    """(combined jitter σ ps, total delay ps = cable + tagger input delay) of each detector's pulses."""
    shift = np.array([d.p.cable_delay_ps + taggers[d.tagger].input_delay_ps.get(d.input, 0) for d in dets], float)
    jitter = np.array([math.hypot(d.p.jitter_ps, taggers[d.tagger].p.jitter_ps) for d in dets])
    return jitter, shift
