"""Schema of instruments.yaml: the lab, its simulated physics and its instruments.

Units are in key names (``_ps``, ``_hz``, ``_deg``, ``_a``, ``_mw``); angles are degrees.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limit(Strict):
    """Allowed range of one setpoint quantity; either bound may be omitted."""

    min: float | None = None
    max: float | None = None


class ChannelWiring(Strict):
    """Which time-tagger input a detector feeds, and its role in the analysis (e.g. ``alice.H``)."""

    tagger: str
    input: int = Field(ge=0, le=255)
    role: str = Field(pattern=r"^(alice|bob)\.(H|V|D|A)$")


class Axis(Strict):
    """One axis of a polarization controller (a motorized waveplate or a fibre paddle)."""

    address: int | str | None = None
    plate: Literal["half", "quarter", "paddle"] = "half"
    retardance_waves: float | None = None  # overrides ``plate`` (paddles: ~0.5 for 3-loop paddles)
    zero_deg: float = 0.0  # angle of the optic's fast axis when the stage reads 0


class OpticsCoupling(Strict):
    """Where a polarization controller sits in the simulated optics."""

    party: Literal["alice", "bob"]
    stage: Literal["compensator", "analyzer"] = "analyzer"


class InstrumentConfig(Strict):
    driver: str
    backend: str = "sim"  # "sim", a VISA resource string, a serial port or URL, or host:port
    description: str = ""
    address: int | str | None = None  # channel on a multi-device controller (e.g. an Eos detector number)
    timeout_s: float = Field(default=2.0, gt=0)
    # Run watchdog (qlab.instruments.watchdog): health-check period in s (None: 0.2 s for lasers, 2 s for
    # others; 0: not watched), query timeout in s, and whether to reopen a dropped link (never re-enables a laser).
    watchdog_period_s: float | None = Field(default=None, ge=0, le=3600)
    watchdog_timeout_s: float | None = Field(default=None, gt=0, le=3600)
    reconnect: bool = False
    limits: dict[str, Limit] = {}
    settings: dict[str, Any] = {}
    axes: dict[str, Axis] = {}
    channel: ChannelWiring | None = None
    optics: OpticsCoupling | None = None
    sim: dict[str, Any] = {}


# --- per-kind simulation parameters (validated against the instrument's kind) -------------------------

class LaserSim(Strict):
    threshold_a: float = Field(default=0.03, ge=0)
    slope_mw_per_a: float = Field(default=250.0, gt=0)  # optical power per ampere above threshold
    interlock_closed: bool = True
    key_on: bool = True


class DetectorSim(Strict):
    efficiency: float = Field(default=0.6, ge=0, le=1)
    dark_count_hz: float = Field(default=100.0, ge=0)
    dead_time_ns: float = Field(default=22.0, ge=0)
    jitter_ps: float = Field(default=350.0, ge=0)  # RMS
    afterpulse_probability: float = Field(default=0.005, ge=0, lt=1)
    afterpulse_delay_ns: float = Field(default=50.0, ge=0)  # mean of the exponential delay after dead time
    cable_delay_ps: int = 0
    gate: bool = False  # SPCM gate input: True means the gate is driven and closes the detector


class TaggerSim(Strict):
    resolution_ps: int = Field(default=1, ge=1)
    jitter_ps: float = Field(default=9.0, ge=0)  # RMS per channel
    clock_offset_ps: int = 0  # this tagger's clock minus the reference clock
    drift_ppm: float = 0.0
    max_rate_hz: float = Field(default=6.0e7, gt=0)  # above this the tagger overflows
    serial: str = "2138000ABC"


class ControllerSim(Strict):
    speed_deg_per_s: float = Field(default=430.0, gt=0)  # ELL14: ~1 rev/s class


KIND_SIM_MODELS: dict[str, type[Strict]] = {
    "laser": LaserSim,
    "detector": DetectorSim,
    "tagger": TaggerSim,
    "counter": TaggerSim,  # its inputs see the same click streams a tagger would
    "polarization": ControllerSim,
}


# --- the simulated physics shared by all simulated instruments ----------------------------------------

class SourceSim(Strict):
    pairs_per_mw: float = Field(default=2.0e4, ge=0)  # pair rate per mW of pump power
    visibility: float = Field(default=0.98, ge=0, le=1)  # Werner visibility
    state: Literal["phi_plus", "psi_minus"] = "phi_plus"


class FibreSim(Strict):
    transmission: float = Field(default=0.8, ge=0, le=1)
    unitary: Literal["identity", "random"] | list[float] = "random"  # list: [alpha, beta, gamma] ZYZ deg
    drift_rad_per_sqrt_s: float = Field(default=0.0, ge=0)  # random-walk rate of the unitary


class FibresSim(Strict):
    alice: FibreSim = FibreSim()
    bob: FibreSim = FibreSim()


class SimulationSection(Strict):
    seed: int = 20261122
    realtime: bool = False  # True: simulated time follows the wall clock (GUI, sim serve)
    source: SourceSim = SourceSim()
    fibres: FibresSim = FibresSim()
    eavesdropper: Literal["none", "intercept_resend"] = "none"


class AnalysisSection(Strict):
    window_ps: int = Field(default=2000, gt=0)  # full width of the coincidence window
    accidentals_offset_ps: int = Field(default=50_000)  # off-peak window shift for accidentals
    integration_s: float = Field(default=1.0, gt=0)
    nfold_groups: list[list[str]] = []  # roles, e.g. [["alice.H", "bob.H", "bob.V"]]: n-fold coincidences


class LabSection(Strict):
    name: str = "qlab lab"
    layout: Literal["bbm92", "chsh"] = "bbm92"
    data_dir: str = "qlab-data"


class LabConfig(Strict):
    lab: LabSection = LabSection()
    simulation: SimulationSection = SimulationSection()
    analysis: AnalysisSection = AnalysisSection()
    instruments: dict[str, InstrumentConfig]
