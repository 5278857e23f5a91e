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
