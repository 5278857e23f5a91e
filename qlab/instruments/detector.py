"""Abstract single-photon detector."""

from __future__ import annotations

from qlab.errors import InstrumentError
from qlab.instruments.base import Instrument
from qlab.instruments.settings import bind


class SinglePhotonDetector(Instrument):
    """Operations an SPD may offer. Models without a setting raise InstrumentError naming it."""

    kind = "detector"
    capabilities: frozenset[str] = frozenset()

    SETTINGS = bind(
        "detector",
        enabled=("enabled", "_set_enabled"),
        efficiency=("efficiency", "_set_efficiency"),
        dead_time_ns=("dead_time_ns", "_set_dead_time"),
        bias=("bias_v", "_set_bias"),
        bias_current=("bias_current_ua", "_set_bias_current"),
        threshold=(None, "_set_threshold"),
        gate=("gate_closed", "_set_gate"),
    )

    def set_enabled(self, on: bool) -> None:
        """Switch the detector on or off. InstrumentError if the model cannot be switched remotely."""
        self.write_setting("enabled", bool(on))

    def set_bias(self, bias_v: float) -> None:
        """Bias voltage in V (APDs)."""
        self.write_setting("bias", bias_v)

    def set_bias_current(self, bias_ua: float) -> None:
        """SNSPD bias current in µA."""
        self.write_setting("bias_current", bias_ua)

    def set_threshold(self, threshold_v: float) -> None:
        """Discriminator / trigger level of the detector's own readout, in V."""
        self.write_setting("threshold", threshold_v)

    def set_efficiency(self, efficiency: float) -> None:
        """Detection efficiency setpoint, 0..1 (models that select it)."""
        self.write_setting("efficiency", efficiency)

    def set_dead_time(self, dead_time_ns: float) -> None:
        """Dead time in ns."""
        self.write_setting("dead_time_ns", dead_time_ns)

    def set_gate(self, closed: bool) -> None:
        """Drive the gate input: True closes the detector (no clicks)."""
        self.write_setting("gate", bool(closed))

    # -- to implement (only those in ``capabilities``) -----------------------------------------------------
    def _set_enabled(self, on: bool) -> None:
        raise InstrumentError(self.name, f"{self.model} cannot be enabled/disabled remotely")

    def enabled(self) -> bool:
        return True

    def _set_bias(self, bias_v: float) -> None: ...
    def _set_bias_current(self, bias_ua: float) -> None: ...
    def _set_threshold(self, threshold_v: float) -> None: ...

    def bias_current_ua(self) -> float:
        raise InstrumentError(self.name, f"{self.model} has no bias-current readback")
    def _set_efficiency(self, efficiency: float) -> None: ...
    def _set_dead_time(self, dead_time_ns: float) -> None: ...
    def _set_gate(self, closed: bool) -> None: ...

    def bias_v(self) -> float:
        raise InstrumentError(self.name, f"{self.model} has no bias readback")

    def efficiency(self) -> float:
        raise InstrumentError(self.name, f"{self.model} has no efficiency readback")

    def dead_time_ns(self) -> float:
        raise InstrumentError(self.name, f"{self.model} has no dead-time readback")

    def gate_closed(self) -> bool:
        return False

    def count_rate_hz(self) -> float | None:
        """The detector's own counter, if it has one."""
        return None
