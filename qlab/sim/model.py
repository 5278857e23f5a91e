"""The simulated lab: one physics model of a two-party entangled-photon experiment.

Every simulated instrument is coupled through a SimLab: laser simulators set the pump power,
polarization-controller simulators set waveplate angles, detector simulators set enable/efficiency/
dead time, tagger simulators read timestamps generated from the current state. The SimLab owns the lock and
the clock and coordinates three parts, each in its own module:

- ``qlab.sim.optical``: source, pump lasers, fibres, wave plates (what happens to a pair before detection);
- ``qlab.sim.detectors``: detector state, visibility to the tagger, click-rate formulas;
- ``qlab.sim.streaming`` (with ``qlab.sim.taggers``): tag generation and each tagger's stream.

Device simulators use only the narrow interface ``qlab.sim.interface.SimulatedLab``. Formulas:
shared/reference/physics.md. Units: time in s at the interface, ps inside; angles in degrees.
"""

from __future__ import annotations

import threading

import numpy as np

from qlab.config.loader import LoadedConfig
from qlab.config.schema import LaserSim
from qlab.sim import detectors as det_model
from qlab.sim.clock import SimClock
from qlab.sim.detectors import DETECTOR_PULSE_V, DetectorState
from qlab.sim.optical import PARTIES, STAGE_ORDER, OpticalState, Waveplate
from qlab.sim.streaming import PARALLEL_MIN_EVENTS, TagGenerator
from qlab.sim.taggers import TaggerState
from qlab.types import TagChunk

__all__ = ["DETECTOR_PULSE_V", "PARALLEL_MIN_EVENTS", "PARTIES", "STAGE_ORDER", "DetectorState", "SimLab",
           "TaggerState", "Waveplate"]


class SimLab:
    """Shared physical state plus the tag generator. Thread-safe: instrument workers call into it.

    Every setter first generates the physics up to now with the old settings, then applies the change.
    Unknown instrument names raise KeyError.
    """

    def __init__(self, loaded: LoadedConfig, realtime: bool | None = None, seed: int | None = None):
        cfg = loaded.config
        self.loaded = loaded
        sim = cfg.simulation
        self.layout = cfg.lab.layout
        self.clock = SimClock(sim.realtime if realtime is None else realtime)
        self.seed = sim.seed if seed is None else seed
        # One generator for the fibres' setup and drift; the order of its draws is part of reproducibility.
        rng = np.random.default_rng(self.seed)
        self._lock = threading.RLock()
        self.optics = OpticalState(sim, self.layout, rng)
        self.detectors: dict[str, DetectorState] = {}
        self.taggers: dict[str, TaggerState] = {}
        for name, inst in cfg.instruments.items():
            kind = loaded.kind(name)
            params = loaded.sim_params[name]
            if kind == "laser":
                assert isinstance(params, LaserSim)
                self.optics.add_laser(name, params)
            elif kind == "detector":
                ch = inst.channel
                party, port = ch.role.split(".")
                self.detectors[name] = DetectorState(name, party, port, ch.tagger, ch.input, params)
            elif kind in ("tagger", "counter"):  # a coincidence counter counts the same click streams
                self.taggers[name] = TaggerState(name, params)
            elif kind == "polarization":
                self.optics.add_controller(name, inst.optics.party, inst.optics.stage, inst.axes)
        self.streams = TagGenerator(self.optics, self.detectors, self.taggers, self.seed, rng)
        self.device_sims: dict[str, object] = {}  # instrument name -> its device simulator
        from qlab.sim.registry import register_lab

        register_lab(self)

    # -- state owned by the parts, readable here as before -----------------------------------------------------
    @property
    def source(self):  # noqa: ANN201 - the config's SourceSim copy
        return self.optics.source

    @property
    def eavesdropper(self) -> str:
        return self.optics.eavesdropper

    @eavesdropper.setter
    def eavesdropper(self, value: str) -> None:
        with self._lock:
            self._catch_up()
            self.optics.eavesdropper = value
            self.streams.dirty = True

    @property
    def lasers(self) -> dict[str, dict]:
        return self.optics.lasers

    @property
    def waveplates(self) -> dict[str, dict[str, dict[str, Waveplate]]]:
        return self.optics.waveplates

    @property
    def fibre_transmission(self) -> dict[str, float]:
        return self.optics.fibre_transmission

    @property
    def fibre_drift(self) -> dict[str, float]:
        return self.optics.fibre_drift

    @property
    def fibre_u0(self) -> dict[str, np.ndarray]:
        return self.optics.fibre_u0

    @property
    def pump_power_mw(self) -> float:
        return self.optics.pump_power_mw

    def laser_power_mw(self, name: str) -> float:
        return self.optics.laser_power_mw(name)

    # -- coupling API used by device simulators (qlab.sim.interface.SimulatedLab) --------------------------
    def _catch_up(self) -> None:
        self.streams.catch_up(int(self.clock.now() * 1e12))

    def set_laser(self, name: str, *, on: bool | None = None, current_a: float | None = None,
                  temperature_c: float | None = None) -> None:
        with self._lock:
            self._catch_up()
            las = self.optics.lasers[name]
            if on is not None:
                las["on"] = bool(on)
            if current_a is not None:
                las["current_a"] = float(current_a)
            if temperature_c is not None:
                las["temperature_c"] = float(temperature_c)
            self.streams.dirty = True

    def set_waveplate(self, instrument: str, axis: str, angle_deg: float) -> None:
        with self._lock:
            self._catch_up()
            self.optics.plate(instrument, axis).angle_deg = float(angle_deg)
            self.streams.dirty = True

    def set_retardance(self, instrument: str, axis: str, retardance_waves: float) -> None:
        """A voltage-driven retarder (fibre squeezer): the axis is fixed, the retardance changes."""
        with self._lock:
            self._catch_up()
            self.optics.plate(instrument, axis).retardance_waves = float(retardance_waves)
            self.streams.dirty = True

    def set_detector(self, name: str, **changes) -> None:
        with self._lock:
            self._catch_up()
            det = self.detectors[name]
            for k, v in changes.items():
                setattr(det, k, v)
            self.streams.dirty = True

    def set_tagger_input(self, tagger: str, channel: int, *, delay_ps: int | None = None,
                         trigger_v: float | None = None) -> None:
        with self._lock:
            self._catch_up()
            tg = self.taggers[tagger]
            if delay_ps is not None:
                tg.input_delay_ps[channel] = int(delay_ps)
            if trigger_v is not None:
                tg.trigger_v[channel] = float(trigger_v)
            self.streams.dirty = True

    def set_visibility(self, visibility: float) -> None:
        with self._lock:
            self._catch_up()
            self.optics.source.visibility = float(visibility)
            self.streams.dirty = True

    def start_stream(self, tagger: str, lossless: bool = False) -> None:
        with self._lock:
            self._catch_up()
            self.streams.start(tagger, lossless)

    def stop_stream(self, tagger: str) -> None:
        with self._lock:
            self.streams.stop(tagger)

    def read_tags(self, tagger: str) -> TagChunk:
        """Tags of ``tagger`` from its previous read up to the tagger time of the simulated now."""
        with self._lock:
            return self.streams.read(tagger, int(self.clock.now() * 1e12), self.clock.realtime)

    # -- optics and detection (analytic; tests and users compare against these) --------------------------
    def fibre_unitary(self, party: str) -> np.ndarray:
        return self.optics.fibre_unitary(party)

    def party_unitary(self, party: str) -> np.ndarray:
        return self.optics.party_unitary(party)

    def state(self) -> np.ndarray:
        return self.optics.state()

    def pair_rate_hz(self) -> float:
        """Emitted pairs/s (see ``OpticalState.pair_rate_hz``)."""
        return self.optics.pair_rate_hz()

    def port_probabilities(self) -> tuple[list[str], list[str], np.ndarray]:
        """(ports of Alice, ports of Bob, P[k, l]) for one emitted pair, before losses."""
        return self.optics.port_probabilities()

    def detector_visible(self, det: DetectorState) -> bool:
        """The detector clicks and its tagger input's trigger level lets its pulses through."""
        return det_model.visible(det, self.taggers)

    _det_visible = detector_visible  # the name qlab.sim.wcp uses

    def detector_efficiency(self, det: DetectorState) -> float:
        """Total detection probability of a photon reaching this detector's port (fibre × detector)."""
        return det_model.efficiency(det, self.optics, self.taggers)

    def expected_rates(self) -> dict[str, object]:
        """Singles (before dead time) and true-coincidence rates in Hz from physics.md formulas."""
        return det_model.expected_rates(self.optics, self.detectors, self.taggers)

    # -- convenience for tests and scripts -----------------------------------------------------------------
    def detector_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.streams.det_names)}
