"""Config variants for physics tests."""

from __future__ import annotations

from typing import Any


def ideal_fibres(cfg: dict[str, Any]) -> None:
    for party in ("alice", "bob"):
        cfg["simulation"]["fibres"][party]["unitary"] = "identity"


def set_visibility(v: float):
    def modify(cfg: dict[str, Any]) -> None:
        ideal_fibres(cfg)
        cfg["simulation"]["source"]["visibility"] = v
    return modify


def no_afterpulses(cfg: dict[str, Any]) -> None:
    for inst in cfg["instruments"].values():
        if inst["driver"] == "excelitas.spcm":
            inst.setdefault("sim", {})["afterpulse_probability"] = 0.0


BOB_OFFSET_PS = 123_456_789_012  # 0.123 s: inside the ±0.5 s search range
BOB_DRIFT_PPM = 0.8


def two_taggers(cfg: dict[str, Any]) -> None:
    """Bob's detectors on his own tagger, whose clock is offset and drifts; cable delays zeroed so the
    recovered offset is the clock offset alone."""
    cfg["instruments"]["tagger_bob"] = {
        "driver": "swabian.timetagger", "backend": "sim",
        "sim": {"serial": "BOB0001", "clock_offset_ps": BOB_OFFSET_PS, "drift_ppm": BOB_DRIFT_PPM}}
    for i, k in enumerate("HVDA"):
        cfg["instruments"][f"bob_{k}"]["channel"] = {"tagger": "tagger_bob", "input": i + 1, "role": f"bob.{k}"}
        cfg["instruments"][f"bob_{k}"]["sim"]["cable_delay_ps"] = 0
        cfg["instruments"][f"alice_{k}"]["sim"]["cable_delay_ps"] = 0


CABLE_PS = {1: 0, 2: 1200, 3: 2500, 4: 3700, 5: 15200, 6: 16100, 7: 17400, 8: 18900}


def calibrated_delays(cfg: dict[str, Any]) -> None:
    """Tagger input delays that cancel the default lab's cable delays (what `qlab run delays` finds)."""
    latest = max(CABLE_PS.values())
    cfg["instruments"]["tagger"].setdefault("settings", {})["delays_ps"] = {
        ch: latest - d for ch, d in CABLE_PS.items()}
