"""Schema of instruments.yaml: the lab, its simulated physics and its instruments.

Units are in key names (``_ps``, ``_hz``, ``_deg``, ``_a``, ``_mw``); angles are degrees.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Sane physical bounds. They are far outside any real lab's values, but inside what the simulation, the
# int64 ps time base (±9.2e18 ps ≈ 106 days) and the run file's int64 attributes can hold, so a typo such
# as ``window_ps: 1e23`` is refused by ``qlab config check`` instead of failing (or silently overflowing)
# when the lab opens.
MAX_SEED = (1 << 63) - 1  # NumPy's SeedSequence needs >= 0; the run file stores the seed as int64
MAX_WINDOW_PS = 1_000_000_000  # 1 ms: a coincidence window beyond this sees every click of a detector
MAX_OFFSET_PS = 10_000_000_000_000  # 10 s: accidentals offset, cable delays and tagger clock offsets
MAX_RATE_HZ = 1.0e11
MAX_DURATION_NS = 1.0e9  # 1 s: dead times and afterpulse delays
MAX_JITTER_PS = 1.0e9
MAX_INTEGRATION_S = 3600.0


ROLE = Annotated[str, Field(pattern=r"^(alice|bob)\.(H|V|D|A)$")]


class Strict(BaseModel):
    # allow_inf_nan=False: a quoted "nan" / "inf" would otherwise slip past the YAML-level check and switch a
    # limit off (every comparison with NaN is false).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Limit(Strict):
    """Allowed range of one setpoint quantity; either bound may be omitted."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Limit:
        # ``{max: null}`` alone would read as a limit but bound nothing: a limit cannot be switched off this way.
        if self.min is None and self.max is None:
            raise ValueError("a limit needs a min, a max or both (remove the entry to have no limit)")
        return self


class ChannelWiring(Strict):
    """Which time-tagger input a detector feeds, and its role in the analysis (e.g. ``alice.H``)."""

    tagger: str
    input: int = Field(ge=1, le=255)  # inputs are numbered from 1 on every supported tagger and counter
    role: ROLE


class Axis(Strict):
    """One axis of a polarization controller (a motorized waveplate or a fibre paddle)."""

    address: int | str | None = None
    plate: Literal["half", "quarter", "paddle"] = "half"
    # overrides ``plate`` (paddles: ~0.5 for 3-loop paddles)
    retardance_waves: float | None = Field(default=None, ge=0, le=100)
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
    timeout_s: float = Field(default=2.0, gt=0, le=3600)
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
    threshold_a: float = Field(default=0.03, ge=0, le=100)
    slope_mw_per_a: float = Field(default=250.0, gt=0, le=1e6)  # optical power per ampere above threshold
    interlock_closed: bool = True
    key_on: bool = True


class DetectorSim(Strict):
    efficiency: float = Field(default=0.6, ge=0, le=1)
    dark_count_hz: float = Field(default=100.0, ge=0, le=MAX_RATE_HZ)
    dead_time_ns: float = Field(default=22.0, ge=0, le=MAX_DURATION_NS)
    jitter_ps: float = Field(default=350.0, ge=0, le=MAX_JITTER_PS)  # RMS
    afterpulse_probability: float = Field(default=0.005, ge=0, lt=1)
    # mean of the exponential delay after dead time
    afterpulse_delay_ns: float = Field(default=50.0, ge=0, le=MAX_DURATION_NS)
    cable_delay_ps: int = Field(default=0, ge=-MAX_OFFSET_PS, le=MAX_OFFSET_PS)
    gate: bool = False  # SPCM gate input: True means the gate is driven and closes the detector


class TaggerSim(Strict):
    resolution_ps: int = Field(default=1, ge=1, le=1_000_000)
    jitter_ps: float = Field(default=9.0, ge=0, le=MAX_JITTER_PS)  # RMS per channel
    # this tagger's clock minus the reference clock
    clock_offset_ps: int = Field(default=0, ge=-MAX_OFFSET_PS, le=MAX_OFFSET_PS)
    drift_ppm: float = Field(default=0.0, ge=-1e4, le=1e4)
    max_rate_hz: float = Field(default=6.0e7, gt=0, le=MAX_RATE_HZ)  # above this the tagger overflows
    serial: str = Field(default="2138000ABC", max_length=64)


class ControllerSim(Strict):
    speed_deg_per_s: float = Field(default=430.0, gt=0, le=1e6)  # ELL14: ~1 rev/s class


KIND_SIM_MODELS: dict[str, type[Strict]] = {
    "laser": LaserSim,
    "detector": DetectorSim,
    "tagger": TaggerSim,
    "counter": TaggerSim,  # its inputs see the same click streams a tagger would
    "polarization": ControllerSim,
}


# --- the simulated physics shared by all simulated instruments ----------------------------------------

class SourceSim(Strict):
    pairs_per_mw: float = Field(default=2.0e4, ge=0, le=1e10)  # pair rate per mW of pump power
    visibility: float = Field(default=0.98, ge=0, le=1)  # Werner visibility
    state: Literal["phi_plus", "psi_minus"] = "phi_plus"


class FibreSim(Strict):
    transmission: float = Field(default=0.8, ge=0, le=1)
    unitary: Literal["identity", "random"] | list[float] = "random"  # list: [alpha, beta, gamma] ZYZ deg
    drift_rad_per_sqrt_s: float = Field(default=0.0, ge=0, le=1e3)  # random-walk rate of the unitary

    @field_validator("unitary")
    @classmethod
    def _three_euler_angles(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) != 3:
            raise ValueError(f"expected 'identity', 'random' or three ZYZ Euler angles in degrees, got {len(v)} "
                             "numbers")
        return v


class FibresSim(Strict):
    alice: FibreSim = FibreSim()
    bob: FibreSim = FibreSim()


class SimulationSection(Strict):
    seed: int = Field(default=20261122, ge=0, le=MAX_SEED)
    realtime: bool = False  # True: simulated time follows the wall clock (GUI, sim serve)
    source: SourceSim = SourceSim()
    fibres: FibresSim = FibresSim()
    eavesdropper: Literal["none", "intercept_resend"] = "none"


class AnalysisSection(Strict):
    window_ps: int = Field(default=2000, gt=0, le=MAX_WINDOW_PS)  # full width of the coincidence window
    # off-peak window shift for accidentals (0: none); must lie outside the coincidence window
    accidentals_offset_ps: int = Field(default=50_000, ge=-MAX_OFFSET_PS, le=MAX_OFFSET_PS)
    integration_s: float = Field(default=1.0, gt=0, le=MAX_INTEGRATION_S)
    # roles, e.g. [["alice.H", "bob.H", "bob.V"]]: n-fold coincidences
    nfold_groups: list[list[ROLE]] = []

    @field_validator("nfold_groups")
    @classmethod
    def _groups_of_distinct_roles(cls, v: list[list[str]]) -> list[list[str]]:
        for g in v:
            if len(g) < 2 or len(set(g)) != len(g):
                raise ValueError(f"an n-fold group needs at least two distinct roles, got {g}")
        return v

    @model_validator(mode="after")
    def _offset_outside_window(self) -> AnalysisSection:
        # The coincidence counter refuses an offset inside the window (it would count true pairs as accidentals).
        if self.accidentals_offset_ps and abs(self.accidentals_offset_ps) <= self.window_ps:
            raise ValueError(f"accidentals_offset_ps {self.accidentals_offset_ps} must lie outside the "
                             f"coincidence window (|offset| > window_ps {self.window_ps}), or be 0")
        return self


class LabSection(Strict):
    name: str = "qlab lab"
    layout: Literal["bbm92", "chsh"] = "bbm92"
    data_dir: str = "qlab-data"


class LabConfig(Strict):
    lab: LabSection = LabSection()
    simulation: SimulationSection = SimulationSection()
    analysis: AnalysisSection = AnalysisSection()
    instruments: dict[str, InstrumentConfig]
