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
        """Enable (True) or disable the detector. Raises InstrumentError if the model cannot be switched remotely, is
        not open or refuses, ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self.write_setting("enabled", bool(on))

    def set_bias(self, bias_v: float) -> None:
        """Bias voltage in V. Raises LimitError outside ``limits.bias_v``, InstrumentError if the model has no bias
        setting, is not open or refuses, ProtocolError on a malformed reply, InstrumentTimeout if the device does not
        answer."""
        self.write_setting("bias", bias_v)

    def set_bias_current(self, bias_ua: float) -> None:
        """SNSPD bias current in µA. Raises LimitError outside ``limits.bias_current_ua``, InstrumentError if the
        model has no bias-current setting, is not open or refuses, ProtocolError on a malformed reply,
        InstrumentTimeout if the device does not answer."""
        self.write_setting("bias_current", bias_ua)

    def set_threshold(self, threshold_v: float) -> None:
        """Discriminator / trigger level of the detector's own readout, in V. Raises LimitError outside
        ``limits.threshold_v``, InstrumentError if the model has no threshold setting, is not open or refuses,
        ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self.write_setting("threshold", threshold_v)

    def set_efficiency(self, efficiency: float) -> None:
        """Detection efficiency as a fraction in (0, 1). Raises LimitError outside ``limits.efficiency``,
        InstrumentError if the model has no efficiency setting, the value is unreachable, not open or refused,
        ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self.write_setting("efficiency", efficiency)

    def set_dead_time(self, dead_time_ns: float) -> None:
        """Dead time in ns. Raises LimitError outside ``limits.dead_time_ns``, InstrumentError if the model has no
        dead-time setting, is not open or refuses, ProtocolError on a malformed reply, InstrumentTimeout if the device
        does not answer."""
        self.write_setting("dead_time_ns", dead_time_ns)

    def set_gate(self, closed: bool) -> None:
        """Drive the gate input: True closes the detector (no clicks). Raises InstrumentError if the model has no gate
        line here or is not open."""
        self.write_setting("gate", bool(closed))

    # -- to implement (only those in ``capabilities``) -----------------------------------------------------
    def _set_enabled(self, on: bool) -> None:
        raise InstrumentError(self.name, f"{self.model} cannot be enabled/disabled remotely")

    def enabled(self) -> bool:
        """True when the detector counts. Raises ProtocolError on a malformed reply, InstrumentTimeout if the device
        does not answer."""
        return True

    def _set_bias(self, bias_v: float) -> None: ...
    def _set_bias_current(self, bias_ua: float) -> None: ...
    def _set_threshold(self, threshold_v: float) -> None: ...

    def bias_current_ua(self) -> float:
        """Bias current in µA. Raises InstrumentError if the model has no readback, ProtocolError on a malformed
        reply, InstrumentTimeout if the device does not answer."""
        raise InstrumentError(self.name, f"{self.model} has no bias-current readback")
    def _set_efficiency(self, efficiency: float) -> None: ...
    def _set_dead_time(self, dead_time_ns: float) -> None: ...
    def _set_gate(self, closed: bool) -> None: ...

    def bias_v(self) -> float:
        """Bias voltage in V. Raises InstrumentError if the model has no readback, ProtocolError on a malformed reply,
        InstrumentTimeout if the device does not answer."""
        raise InstrumentError(self.name, f"{self.model} has no bias readback")

    def efficiency(self) -> float:
        """Detection efficiency as a fraction. Raises InstrumentError if the model has no readback, ProtocolError on a
        malformed reply, InstrumentTimeout if the device does not answer."""
        raise InstrumentError(self.name, f"{self.model} has no efficiency readback")

    def dead_time_ns(self) -> float:
        """Dead time in ns. Raises InstrumentError if the model has no readback, ProtocolError on a malformed reply,
        InstrumentTimeout if the device does not answer."""
        raise InstrumentError(self.name, f"{self.model} has no dead-time readback")

    def gate_closed(self) -> bool:
        """True while the gate holds the detector off."""
        return False

    def count_rate_hz(self) -> float | None:
        """The detector's own count rate in Hz, or None if it has no counter. Raises ProtocolError on a malformed
        reply, InstrumentTimeout if the device does not answer."""
        return None
