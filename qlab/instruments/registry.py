"""The driver table: config driver ids -> driver classes (imported lazily) and their instrument kind."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class DriverEntry:
    driver_id: str  # as written in instruments.yaml, e.g. "thorlabs.ell14"
    module: str
    cls: str
    kind: str  # laser | detector | tagger | counter | polarization
    sim_model: str  # lower-case id used by `qlab sim list/serve`

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.cls)


_ENTRIES = [
    DriverEntry("thorlabs.ell14", "qlab.drivers.thorlabs.ell14", "ELL14", "polarization", "ell14"),
    DriverEntry("thorlabs.k10cr1", "qlab.drivers.thorlabs.k10cr1", "K10CR1", "polarization", "k10cr1"),
    DriverEntry("thorlabs.mpc320", "qlab.drivers.thorlabs.mpc320", "MPC320", "polarization", "mpc320"),
    DriverEntry("ozoptics.epc400", "qlab.drivers.ozoptics.epc400", "EPC400", "polarization", "epc400"),
    DriverEntry("thorlabs.itc4001", "qlab.drivers.thorlabs.itc4001", "ITC4001", "laser", "itc4001"),
    DriverEntry("idquantique.id120", "qlab.drivers.idquantique.id120", "ID120", "detector", "id120"),
    DriverEntry("idquantique.id1000", "qlab.drivers.idquantique.id1000", "ID1000", "tagger", "id1000"),
    DriverEntry("toptica.dlcpro", "qlab.drivers.toptica.dlcpro", "DLCPro", "laser", "dlcpro"),
    DriverEntry("singlequantum.eos", "qlab.drivers.singlequantum.eos", "EosSNSPD", "detector", "eos"),
    DriverEntry("excelitas.spcm", "qlab.drivers.excelitas.spcm", "SPCM", "detector", "spcm"),
    DriverEntry("tausand.abacus", "qlab.drivers.tausand.abacus", "Abacus", "counter", "abacus"),
    DriverEntry("picoquant.multiharp", "qlab.drivers.picoquant.multiharp", "PicoQuantMultiHarp", "tagger",
                "multiharp"),
    DriverEntry("picoquant.hydraharp", "qlab.drivers.picoquant.multiharp", "PicoQuantHydraHarp", "tagger",
                "hydraharp"),
    DriverEntry("swabian.timetagger", "qlab.drivers.swabian.timetagger", "SwabianTimeTagger", "tagger",
                "swabian"),
]

DRIVERS: dict[str, DriverEntry] = {e.driver_id: e for e in _ENTRIES}
SIM_MODELS: dict[str, DriverEntry] = {e.sim_model: e for e in _ENTRIES}
