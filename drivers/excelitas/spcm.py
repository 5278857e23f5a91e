"""Excelitas SPCM (Si SPAD module): no digital interface.

The module emits a TTL pulse per click and has a gate input. qlab models it as a passive detector whose
settings (efficiency, dark counts, dead time, jitter) live in instruments.yaml; on the simulated lab the
gate is a simulated TTL line. On real hardware the gate needs a DAQ line, which this driver does not own,
so ``set_gate`` is only offered where the backend provides one (``sim``).

Config block::

    alice_H:
      driver: excelitas.spcm
      backend: passive        # or sim
      channel: {tagger: tagger, input: 1, role: alice.H}
      sim: {efficiency: 0.6, dark_count_hz: 100, dead_time_ns: 22, jitter_ps: 350}
"""

from __future__ import annotations

from typing import Any

from qlab.instruments.detector import SinglePhotonDetector
from qlab.types import Identification


class SPCM(SinglePhotonDetector):
    model = "Excelitas SPCM"
    transport_kind = "none"
    capabilities = frozenset({"efficiency", "dead_time"})

    def __init__(self, *args: Any, params: Any = None, lab: Any = None, **kw: Any):
        super().__init__(*args, **kw)
        self._lab = lab
        self._params = params
        if lab is not None:
            self.capabilities = frozenset({"efficiency", "dead_time", "gate", "enable"})

    def identify(self) -> Identification:
        """The module has no interface to ask: model only."""
        return Identification("Excelitas", "SPCM", details=f"passive, {'simulated' if self._lab else 'no interface'}")

    def _state(self):
        return self._lab.detectors[self.name] if self._lab is not None else None

    def enabled(self) -> bool:
        st = self._state()
        return st.enabled if st is not None else True

    def _set_enabled(self, on: bool) -> None:
        if self._lab is None:
            super()._set_enabled(on)
        self._lab.set_detector(self.name, enabled=on)

    def efficiency(self) -> float:
        st = self._state()
        return st.efficiency if st is not None else float(self.options.get("efficiency", 0.6))

    def _set_efficiency(self, efficiency: float) -> None:
        # A SPAD module's efficiency is fixed; the value records what was measured (e.g. after a Klyshko
        # calibration) and, on the simulated lab, what the model uses.
        if self._lab is not None:
            self._lab.set_detector(self.name, efficiency=efficiency)
        else:
            self.options["efficiency"] = efficiency

    def dead_time_ns(self) -> float:
        st = self._state()
        return st.dead_time_ns if st is not None else float(self.options.get("dead_time_ns", 22.0))

    def _set_dead_time(self, dead_time_ns: float) -> None:
        if self._lab is not None:
            self._lab.set_detector(self.name, dead_time_ns=dead_time_ns)
        else:
            self.options["dead_time_ns"] = dead_time_ns

    def gate_closed(self) -> bool:
        st = self._state()
        return st.gate_closed if st is not None else False

    def _set_gate(self, closed: bool) -> None:
        self._lab.set_detector(self.name, gate_closed=closed)
