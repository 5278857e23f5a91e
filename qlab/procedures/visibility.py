"""Visibility measurements in the H/V and D/A bases through the analyzer instruments."""

from __future__ import annotations

from typing import Any

from qlab.analysis.bell import visibility
from qlab.lab import Lab
from qlab.procedures.engine import RunContext
from qlab.procedures.measure import Measurement, integrate


def analyzer_axes(lab: Lab) -> dict[str, tuple[str, str]]:
    """party -> (instrument, axis) of its analyzer half-wave plate."""
    out = {}
    for party in ("alice", "bob"):
        names = lab.controllers(party, "analyzer")
        if not names:
            raise ValueError(f"the lab has no analyzer polarization controller for {party}")
        out[party] = (names[0], lab[names[0]].axes()[0])
    return out


def set_analyzers(lab: Lab, alice_deg: float, bob_deg: float) -> None:
    """Set the analyzer polarization angles (degrees); a half-wave plate turns by half the angle."""
    axes = analyzer_axes(lab)
    for party, angle in (("alice", alice_deg), ("bob", bob_deg)):
        inst, ax = axes[party]
        lab[inst].move_absolute(angle / 2.0, ax)


def hv_counts(m: Measurement, subtract_accidentals: bool = False) -> tuple[float, float]:
    par = m.coinc("alice.H", "bob.H") + m.coinc("alice.V", "bob.V")
    cross = m.coinc("alice.H", "bob.V") + m.coinc("alice.V", "bob.H")
    if subtract_accidentals:
        par -= m.acc("alice.H", "bob.H") + m.acc("alice.V", "bob.V")
        cross -= m.acc("alice.H", "bob.V") + m.acc("alice.V", "bob.H")
    return par, cross


def measure_visibilities(ctx: RunContext, integration_s: float) -> dict[str, Any]:
    """H/V and D/A visibilities. With D/A detectors (bbm92 layout) one integration gives both;
    otherwise the analyzers are turned to 45° for the D/A basis."""
    lab = ctx.lab
    roles = set(lab.roles())
    set_analyzers(lab, 0.0, 0.0)
    m = integrate(ctx, integration_s)
    v_hv, e_hv = visibility(*hv_counts(m))
    if {"alice.D", "alice.A", "bob.D", "bob.A"} <= roles:
        par = m.coinc("alice.D", "bob.D") + m.coinc("alice.A", "bob.A")
        cross = m.coinc("alice.D", "bob.A") + m.coinc("alice.A", "bob.D")
    else:
        set_analyzers(lab, 45.0, 45.0)
        par, cross = hv_counts(integrate(ctx, integration_s))
        set_analyzers(lab, 0.0, 0.0)
    v_da, e_da = visibility(par, cross)
    return {"HV": v_hv, "HV_err": e_hv, "DA": v_da, "DA_err": e_da}
