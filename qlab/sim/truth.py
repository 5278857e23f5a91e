"""Figures only the simulation knows (true transmissions, efficiencies, emitted pair rate, repeaterless
bounds), reported as such. Procedures never compute them; the run engine records this report in the run
file under ``simulation_truth`` when the lab is simulated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qlab.qkd.finite_key import plob_bound

PARTIES = ("alice", "bob")


def simulation_truth(sim: Any) -> dict[str, Any]:
    """The simulated channel as it is now, from ``SimLab``'s public state.

    ``channel_transmission`` of a party is its fibre transmission times its detectors' mean efficiency;
    ``bbm92_plob_bound_bps`` is the PLOB bound -log2(1 - η_A η_B) times the emitted pair rate (Hz), the most
    any repeaterless protocol could distill from this source and channel."""
    fibre = {p: float(sim.fibre_transmission[p]) for p in PARTIES}
    efficiency: dict[str, float] = {}
    for party in PARTIES:
        dets = [d for d in sim.detectors.values() if d.party == party]
        efficiency[party] = float(np.mean([d.efficiency for d in dets])) if dets else 0.0
    eta = {p: fibre[p] * efficiency[p] for p in PARTIES}
    pair_rate_hz = float(sim.pair_rate_hz())
    per_pair = plob_bound(eta["alice"] * eta["bob"])
    return {"description": "true figures of the simulated lab (not measured)",
            "pair_rate_hz": pair_rate_hz, "fibre_transmission": fibre, "detector_efficiency_mean": efficiency,
            "channel_transmission": eta, "bbm92_plob_bits_per_pair": per_pair,
            "bbm92_plob_bound_bps": pair_rate_hz * per_pair}
