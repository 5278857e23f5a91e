"""Abstract single-photon detector."""

from __future__ import annotations

from typing import Any

from qlab.errors import InstrumentError
from qlab.instruments.base import Instrument, value


class SinglePhotonDetector(Instrument):
    """Operations an SPD may offer. Models without a setting raise InstrumentError naming it."""

    kind = "detector"
    capabilities: frozenset[str] = frozenset()

    def set_enabled(self, on: bool) -> None:
        """Enable (True) or disable the detector. Raises InstrumentError if the model cannot be switched remotely, is
        not open or refuses, ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self._require_open()
        self._set_enabled(bool(on))

    def set_bias(self, bias_v: float) -> None:
        """Bias voltage in V. Raises LimitError outside ``limits.bias_v``, InstrumentError if the model has no bias
        setting, is not open or refuses, ProtocolError on a malformed reply, InstrumentTimeout if the device does not
        answer."""
        self._require_open()
        self._need("bias")
        self._set_bias(self.limits.check("bias_v", bias_v))

    def set_bias_current(self, bias_ua: float) -> None:
        """SNSPD bias current in µA. Raises LimitError outside ``limits.bias_current_ua``, InstrumentError if the
        model has no bias-current setting, is not open or refuses, ProtocolError on a malformed reply,
        InstrumentTimeout if the device does not answer."""
        self._require_open()
        self._need("bias_current")
        self._set_bias_current(self.limits.check("bias_current_ua", bias_ua))

    def set_threshold(self, threshold_v: float) -> None:
        """Discriminator / trigger level of the detector's own readout, in V. Raises LimitError outside
        ``limits.threshold_v``, InstrumentError if the model has no threshold setting, is not open or refuses,
        ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self._require_open()
        self._need("threshold")
        self._set_threshold(self.limits.check("threshold_v", threshold_v))

    def set_efficiency(self, efficiency: float) -> None:
        """Detection efficiency as a fraction in (0, 1). Raises LimitError outside ``limits.efficiency``,
        InstrumentError if the model has no efficiency setting, the value is unreachable, not open or refused,
        ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self._require_open()
        self._need("efficiency")
        self._set_efficiency(self.limits.check("efficiency", efficiency))

    def set_dead_time(self, dead_time_ns: float) -> None:
        """Dead time in ns. Raises LimitError outside ``limits.dead_time_ns``, InstrumentError if the model has no
        dead-time setting, is not open or refuses, ProtocolError on a malformed reply, InstrumentTimeout if the device
        does not answer."""
        self._require_open()
        self._need("dead_time")
        self._set_dead_time(self.limits.check("dead_time_ns", dead_time_ns))

    def set_gate(self, closed: bool) -> None:
        """Drive the gate input: True closes the detector (no clicks). Raises InstrumentError if the model has no gate
        line here or is not open."""
        self._require_open()
        self._need("gate")
        self._set_gate(bool(closed))

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Apply instruments.yaml ``settings``: enabled, bias_v (V), bias_current_ua (µA), threshold_v (V), efficiency
        (fraction), dead_time_ns (ns), gate. Raises InstrumentError for any other key, and what each setter raises."""
        setters = {"enabled": self.set_enabled, "bias_v": self.set_bias, "bias_current_ua": self.set_bias_current,
                   "threshold_v": self.set_threshold, "efficiency": self.set_efficiency,
                   "dead_time_ns": self.set_dead_time, "gate": self.set_gate}
        for key, v in settings.items():
            if key not in setters:
                super().apply_settings({key: v})
            setters[key](v)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Enable state and every setting the model has, with units (V, µA, ns). Raises ProtocolError on a malformed
        reply, InstrumentTimeout if the device does not answer."""
        snap = {"enabled": value(self.enabled(), "bool")}
        if "efficiency" in self.capabilities:
            snap["efficiency"] = value(self.efficiency(), "")
        if "dead_time" in self.capabilities:
            snap["dead_time"] = value(self.dead_time_ns(), "ns")
        if "bias" in self.capabilities:
            snap["bias"] = value(self.bias_v(), "V")
        if "gate" in self.capabilities:
            snap["gate_closed"] = value(self.gate_closed(), "bool")
        if "bias_current" in self.capabilities:
            snap["bias_current"] = value(self.bias_current_ua(), "µA")
        return snap

    def _need(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise InstrumentError(self.name, f"{self.model} has no {capability} setting")

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
