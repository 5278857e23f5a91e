"""The narrow interface device simulators use on the simulated lab.

Device simulators (``drivers/<vendor>/<model>_sim.py``, ``qlab.sim.wcp``) reach the simulated physics only
through these calls and attribute reads, so the whole simulated lab can be served from another process (a
network emulator) with a proxy implementing this protocol. ``qlab.sim.model.SimLab`` implements it.
Times in s (clock) and ps (tags, delays); angles in degrees; voltages in V. Unknown instrument names raise
KeyError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from qlab.sim.clock import SimClock
from qlab.sim.detectors import DetectorState
from qlab.sim.taggers import TaggerState
from qlab.types import TagChunk


@runtime_checkable
class SimulatedLab(Protocol):
    clock: SimClock
    seed: int  # seeds device-side randomness (e.g. a tagger's counter noise) reproducibly

    # Reads simulators do today: detector wiring/state (detector and tagger simulators), laser parameters
    # (laser simulators read ``lasers[name]["p"]``), tagger parameters (serial, stream start ``t_read_ps``).
    @property
    def detectors(self) -> Mapping[str, DetectorState]: ...

    @property
    def lasers(self) -> Mapping[str, dict[str, Any]]: ...

    @property
    def taggers(self) -> Mapping[str, TaggerState]: ...

    def set_laser(self, name: str, *, on: bool | None = None, current_a: float | None = None,
                  temperature_c: float | None = None) -> None: ...

    def set_waveplate(self, instrument: str, axis: str, angle_deg: float) -> None: ...

    def set_retardance(self, instrument: str, axis: str, retardance_waves: float) -> None: ...

    def set_detector(self, name: str, **changes: Any) -> None: ...

    def set_tagger_input(self, tagger: str, channel: int, *, delay_ps: int | None = None,
                         trigger_v: float | None = None) -> None: ...

    def start_stream(self, tagger: str, lossless: bool = False) -> None: ...

    def stop_stream(self, tagger: str) -> None: ...

    def read_tags(self, tagger: str) -> TagChunk: ...

    def expected_rates(self) -> dict[str, Any]:
        """Counter-style devices (ID120, Eos, ID1000 counters) report expected singles_hz."""
        ...

    def detector_efficiency(self, det: DetectorState) -> float: ...

    def detector_visible(self, det: DetectorState) -> bool: ...
