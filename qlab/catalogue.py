"""The driver catalogue: every driver id of instruments.yaml, its driver class, instrument kind and simulation.

A leaf module: it names classes by module and attribute strings and imports nothing from qlab, so the
config layer can list drivers and kinds without importing any driver, and no driver knows its simulator.

Each entry says how the driver is simulated:

- ``simulator``: a device simulator speaking the real wire protocol (``module:Class``). The factory links
  the driver to it in process; ``qlab sim serve`` and ``qlabsim://`` URLs expose it to other programs.
- ``sim_builder``: a function (``module:function``) that builds the driver on a simulated vendor library,
  SDK or extra link, ``build(name, simlab, limits, cfg, options) -> driver``. Used where the device is
  simulated at the API level (Swabian, PicoQuant, SPCM) or needs more than one link (Eos counts port,
  ID1000 data stream). When both are given, the builder is what the factory calls.
- ``remote_builder``: for SDK-level models, a function (``module:function``) building the driver on a client
  stand-in for the vendor SDK that forwards its calls to a simulated SDK served by another process
  (``backend: sdk+tcp://HOST:PORT``, see qlab/transport/sdk_rpc.py), ``build(name, limits, cfg, options)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

KINDS = ("laser", "detector", "tagger", "counter", "polarization")


def load_object(ref: str) -> Any:
    """Import ``module:attribute`` and return the attribute (ImportError / AttributeError if absent)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class CatalogueEntry:
    driver_id: str  # as written in instruments.yaml, e.g. "thorlabs.ell14"
    kind: str  # one of KINDS
    sim_model: str  # lower-case id used by `qlab sim list/serve` and qlabsim:// URLs
    driver: str  # "module:Class"
    simulator: str | None = None  # "module:Class" of the wire-protocol device simulator
    sim_builder: str | None = None  # "module:function" building the driver on a simulated SDK / links
    remote_builder: str | None = None  # "module:function" building the driver on a served simulated SDK

    def load(self) -> type:
        """The driver class."""
        return load_object(self.driver)

    def load_simulator(self) -> type:
        """The wire-protocol device simulator class; ValueError for models simulated at the API level."""
        if self.simulator is None:
            raise ValueError(f"{self.sim_model} has no wire-protocol simulator (it is simulated at the API level)")
        return load_object(self.simulator)

    def load_sim_builder(self) -> Any:
        """The simulated-driver builder, or None when the factory links the driver to ``simulator``."""
        return load_object(self.sim_builder) if self.sim_builder else None

    def load_remote_builder(self) -> Any:
        """The builder of the driver on a served simulated SDK, or None for models with a wire protocol."""
        return load_object(self.remote_builder) if self.remote_builder else None

    @property
    def api_level(self) -> bool:
        """True when the model has no wire-protocol simulator (only a simulated vendor library / SDK)."""
        return self.simulator is None


_D = "qlab.drivers."

_ENTRIES = [
    CatalogueEntry("thorlabs.ell14", "polarization", "ell14", _D + "thorlabs.ell14:ELL14",
                   simulator=_D + "thorlabs.ell14_sim:ELL14Simulator"),
    CatalogueEntry("thorlabs.k10cr1", "polarization", "k10cr1", _D + "thorlabs.k10cr1:K10CR1",
                   simulator=_D + "thorlabs.k10cr1_sim:K10CR1Simulator"),
    CatalogueEntry("thorlabs.mpc320", "polarization", "mpc320", _D + "thorlabs.mpc320:MPC320",
                   simulator=_D + "thorlabs.mpc320_sim:MPC320Simulator"),
    CatalogueEntry("ozoptics.epc400", "polarization", "epc400", _D + "ozoptics.epc400:EPC400",
                   simulator=_D + "ozoptics.epc400_sim:EPC400Simulator"),
    CatalogueEntry("thorlabs.itc4001", "laser", "itc4001", _D + "thorlabs.itc4001:ITC4001",
                   simulator=_D + "thorlabs.itc4001_sim:ITC4001Simulator"),
    CatalogueEntry("idquantique.id120", "detector", "id120", _D + "idquantique.id120:ID120",
                   simulator=_D + "idquantique.id120_sim:ID120Simulator"),
    CatalogueEntry("idquantique.id1000", "tagger", "id1000", _D + "idquantique.id1000:ID1000",
                   simulator=_D + "idquantique.id1000_sim:ID1000Simulator",
                   sim_builder=_D + "idquantique.id1000_sim:build_simulated"),
    CatalogueEntry("toptica.dlcpro", "laser", "dlcpro", _D + "toptica.dlcpro:DLCPro",
                   simulator=_D + "toptica.dlcpro_sim:DLCProSimulator"),
    CatalogueEntry("singlequantum.eos", "detector", "eos", _D + "singlequantum.eos:EosSNSPD",
                   simulator=_D + "singlequantum.eos_sim:EosSimulator",
                   sim_builder=_D + "singlequantum.eos_sim:build_simulated"),
    CatalogueEntry("excelitas.spcm", "detector", "spcm", _D + "excelitas.spcm:SPCM",
                   sim_builder=_D + "excelitas.spcm_sim:build_simulated"),
    CatalogueEntry("tausand.abacus", "counter", "abacus", _D + "tausand.abacus:Abacus",
                   simulator=_D + "tausand.abacus_sim:AbacusSimulator"),
    CatalogueEntry("picoquant.multiharp", "tagger", "multiharp", _D + "picoquant.multiharp:PicoQuantMultiHarp",
                   sim_builder=_D + "picoquant.multiharp_sim:build_simulated_multiharp",
                   remote_builder=_D + "picoquant.multiharp_remote:build_remote_multiharp"),
    CatalogueEntry("picoquant.hydraharp", "tagger", "hydraharp", _D + "picoquant.multiharp:PicoQuantHydraHarp",
                   sim_builder=_D + "picoquant.multiharp_sim:build_simulated_hydraharp",
                   remote_builder=_D + "picoquant.multiharp_remote:build_remote_hydraharp"),
    CatalogueEntry("swabian.timetagger", "tagger", "swabian", _D + "swabian.timetagger:SwabianTimeTagger",
                   sim_builder=_D + "swabian.timetagger_sim:build_simulated",
                   remote_builder=_D + "swabian.timetagger_remote:build_remote"),
]

DRIVERS: dict[str, CatalogueEntry] = {e.driver_id: e for e in _ENTRIES}
SIM_MODELS: dict[str, CatalogueEntry] = {e.sim_model: e for e in _ENTRIES}


def entry(driver_id: str) -> CatalogueEntry:
    """The entry of a driver id; KeyError naming the known ids."""
    try:
        return DRIVERS[driver_id]
    except KeyError:
        raise KeyError(f"unknown driver {driver_id!r}; known: {sorted(DRIVERS)}") from None


def sim_model(model: str) -> CatalogueEntry:
    """The entry of a `qlab sim` model id (``ell14``, ``swabian`` …); KeyError naming the known ids."""
    try:
        return SIM_MODELS[model]
    except KeyError:
        raise KeyError(f"unknown simulated model {model!r}; known: {sorted(SIM_MODELS)}") from None
