"""Simulated Excelitas SPCM: the passive driver bound to its detector in the simulated lab (the gate is a
simulated TTL line; efficiency, dead time and enable act on the simulated clicks)."""

from __future__ import annotations

from typing import Any

from qlab.drivers.excelitas.spcm import SPCM


def build_simulated(name: str, sim: Any, limits: Any, cfg: Any, options: dict) -> SPCM:
    """An SPCM driver whose state is the simulated detector ``name`` of ``sim``."""
    return SPCM(name, limits=limits, clock=sim.clock, options=options, params=sim.loaded.sim_params[name], lab=sim)
