"""Optical state of the simulated lab: the pair source, pump lasers, fibres and wave plates.

Everything here answers "what happens to one emitted pair before it reaches a detector": the pair rate from
the pump, the two-photon state, each party's polarization unitary (fibre, compensator, analyzer) and the
probability of each pair of analyzer ports. Formulas: shared/reference/physics.md. Angles in degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from qlab import optics
from qlab.config.schema import LaserSim, SimulationSection

PARTIES = ("alice", "bob")
STAGE_ORDER = ("compensator", "analyzer")


@dataclass
class Waveplate:
    retardance_waves: float
    zero_deg: float
    angle_deg: float = 0.0


def initial_unitary(spec: Any, rng: np.random.Generator) -> np.ndarray:
    """A fibre's polarization unitary at t = 0: identity, Haar-random (draws from ``rng``) or Euler angles."""
    if spec == "identity":
        return np.eye(2, dtype=complex)
    if spec == "random":
        return optics.haar_su2(rng)
    return optics.su2_from_euler(*np.radians(spec))


class OpticalState:
    """Source, pump lasers, fibres (with their random polarization walk) and the parties' wave plates.

    Not thread-safe on its own: the owning SimLab serialises access under its lock.
    """

    def __init__(self, sim: SimulationSection, layout: str, rng: np.random.Generator):
        self.layout = layout
        self.source = sim.source.model_copy()
        self.eavesdropper = sim.eavesdropper
        self.fibre_transmission = {p: getattr(sim.fibres, p).transmission for p in PARTIES}
        self.fibre_drift = {p: getattr(sim.fibres, p).drift_rad_per_sqrt_s for p in PARTIES}
        self.fibre_u0 = {p: initial_unitary(getattr(sim.fibres, p).unitary, rng) for p in PARTIES}
        self.fibre_walk = {p: np.zeros(3) for p in PARTIES}
        self.lasers: dict[str, dict] = {}
        self.waveplates: dict[str, dict[str, dict[str, Waveplate]]] = {p: {s: {} for s in STAGE_ORDER}
                                                                      for p in PARTIES}

    # -- building ----------------------------------------------------------------------------------------------
    def add_laser(self, name: str, params: LaserSim) -> None:
        self.lasers[name] = {"on": False, "current_a": 0.0, "temperature_c": 25.0, "p": params}

    def add_controller(self, name: str, party: str, stage: str, axes: dict[str, Any]) -> None:
        """A polarization controller's axes (config ``Axis`` entries) as wave plates of ``party``'s ``stage``."""
        plates = self.waveplates[party][stage]
        for ax, a in axes.items():
            plates[f"{name}.{ax}"] = Waveplate(optics.axis_retardance(a), a.zero_deg)

    # -- lasers ------------------------------------------------------------------------------------------------
    def laser_power_mw(self, name: str) -> float:
        las = self.lasers[name]
        p: LaserSim = las["p"]
        if not las["on"]:
            return 0.0
        return max(0.0, (las["current_a"] - p.threshold_a) * p.slope_mw_per_a)

    @property
    def pump_power_mw(self) -> float:
        return sum(self.laser_power_mw(n) for n in self.lasers)

    def pair_rate_hz(self) -> float:
        """Emitted pairs/s: pairs_per_mw × pump power, times a phase-matching factor of the laser
        temperature (Gaussian, 25 °C optimum, 8 °C width)."""
        if not self.lasers:
            return 0.0
        temp = np.mean([las["temperature_c"] for las in self.lasers.values()])
        return self.source.pairs_per_mw * self.pump_power_mw * math.exp(-0.5 * ((temp - 25.0) / 8.0) ** 2)

    # -- polarization ------------------------------------------------------------------------------------------
    def plate(self, instrument: str, axis: str) -> Waveplate:
        """Raises KeyError when ``instrument.axis`` is not in the simulated optics."""
        for party in PARTIES:
            for stage in STAGE_ORDER:
                wp = self.waveplates[party][stage].get(f"{instrument}.{axis}")
                if wp is not None:
                    return wp
        raise KeyError(f"{instrument}.{axis} is not a wave plate or retarder in the simulated optics")

    @property
    def drifting(self) -> bool:
        return any(self.fibre_drift[p] > 0 for p in PARTIES)

    def step_drift(self, rng: np.random.Generator, dt_s: float) -> None:
        """Advance each drifting fibre's polarization random walk by ``dt_s`` seconds (draws from ``rng``)."""
        for p in PARTIES:
            if self.fibre_drift[p] > 0:
                self.fibre_walk[p] += rng.normal(0.0, self.fibre_drift[p] * math.sqrt(dt_s), 3)

    def fibre_unitary(self, party: str) -> np.ndarray:
        w = self.fibre_walk[party]
        angle = float(np.linalg.norm(w))
        if angle == 0:
            return self.fibre_u0[party]
        n = w / angle
        sig = n[0] * np.array([[0, 1], [1, 0]]) + n[1] * np.array([[0, -1j], [1j, 0]]) + n[2] * np.diag([1, -1])
        rot = math.cos(angle / 2) * np.eye(2) - 1j * math.sin(angle / 2) * sig
        return rot @ self.fibre_u0[party]

    def party_unitary(self, party: str) -> np.ndarray:
        u = self.fibre_unitary(party)
        for stage in STAGE_ORDER:
            for wp in self.waveplates[party][stage].values():
                u = optics.retarder(wp.retardance_waves, math.radians(wp.angle_deg + wp.zero_deg)) @ u
        return u

    def state(self) -> np.ndarray:
        rho = optics.werner(self.source.state, self.source.visibility)
        if self.eavesdropper == "intercept_resend":
            rho = optics.intercept_resend_bob(rho)
        return rho

    def port_probabilities(self) -> tuple[list[str], list[str], np.ndarray]:
        """(ports of Alice, ports of Bob, P[k, l]) for one emitted pair, before losses."""
        povm = optics.port_povm(self.layout)
        ports = list(povm)
        p = optics.joint_probabilities(self.state(), self.party_unitary("alice"), self.party_unitary("bob"),
                                       [povm[k] for k in ports], [povm[k] for k in ports])
        return ports, ports, p
