"""Abstract laser (pump or source laser with optional TEC)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from qlab.errors import InterlockError
from qlab.instruments.base import Instrument, value


class Laser(Instrument):
    kind = "laser"

    # -- public, limit-checked API ---------------------------------------------------------------------
    def set_current(self, current_a: float) -> None:
        """Laser-diode current setpoint in A. Raises LimitError outside ``limits.current_a``, InstrumentError if not
        open or the device refuses, ProtocolError on a malformed reply, InstrumentTimeout if the device does not
        answer."""
        self._require_open()
        self._set_current(self.limits.check("current_a", current_a))

    def set_power(self, power_mw: float) -> None:
        """Optical power setpoint in mW (constant-power mode where the device has it). Raises LimitError outside
        ``limits.power_mw``, NotImplementedError where the model has no such mode, InstrumentError if not open or
        refused, ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self._require_open()
        self._set_power(self.limits.check("power_mw", power_mw))

    def set_temperature(self, temperature_c: float) -> None:
        """TEC temperature setpoint in °C. Raises LimitError outside ``limits.temperature_c``, InstrumentError if not
        open or the device refuses, ProtocolError on a malformed reply, InstrumentTimeout if the device does not
        answer."""
        self._require_open()
        self._set_temperature(self.limits.check("temperature_c", temperature_c))

    def set_output(self, on: bool) -> None:
        """Switch the laser emission. Switching on checks the current setpoint against ``limits.current_a``
        (LimitError) and raises InterlockError when a protection circuit is tripped or the output does not come on;
        InstrumentError if not open or refused, ProtocolError on a malformed reply, InstrumentTimeout if the device
        does not answer."""
        self._require_open()
        if on:
            # The current setpoint must itself be inside the envelope before light comes out.
            self.limits.check("current_a", self.current_setpoint())
            trips = self.protection()
            if any(trips.values()):
                raise InterlockError(self.name, f"cannot switch on: protection tripped {trips}")
        self._set_output(bool(on))
        if on and not self.output():
            raise InterlockError(self.name, f"output did not switch on (protection: {self.protection()})")

    def safe_state(self) -> None:
        """Output off (nothing if not open). Errors as ``set_output``."""
        if self._is_open:
            self._set_output(False)

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Apply instruments.yaml ``settings``: current_a (A), power_mw (mW), temperature_c (°C). Raises
        InstrumentError for any other key, and what each setter raises."""
        setters = {"current_a": self.set_current, "power_mw": self.set_power,
                   "temperature_c": self.set_temperature}
        for key, v in settings.items():
            if key not in setters:
                super().apply_settings({key: v})
            setters[key](v)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Setpoints and readbacks with units (A, °C, mW, protection trips). Raises ProtocolError on a malformed
        reply, InstrumentTimeout if the device does not answer."""
        return {"output": value(self.output(), "bool"), "current_set": value(self.current_setpoint(), "A"),
                "current_meas": value(self.measured_current(), "A"),
                "temperature_set": value(self.temperature_setpoint(), "°C"),
                "temperature_meas": value(self.measured_temperature(), "°C"),
                "power_meas": value(self.measured_power(), "mW"),
                **{f"protection_{k}": value(v, "tripped") for k, v in self.protection().items()}}

    def status(self) -> dict[str, Any]:
        """Open flag, model, output state and protection trips. Raises ProtocolError on a malformed reply,
        InstrumentTimeout if the device does not answer."""
        return {**super().status(), "output": self.output(), "protection": self.protection()}

    # -- to implement --------------------------------------------------------------------------------------
    @abstractmethod
    def _set_current(self, current_a: float) -> None: ...

    def _set_power(self, power_mw: float) -> None:
        raise NotImplementedError(f"{self.model} has no constant-power mode in qlab")

    @abstractmethod
    def _set_temperature(self, temperature_c: float) -> None: ...

    @abstractmethod
    def _set_output(self, on: bool) -> None: ...

    @abstractmethod
    def output(self) -> bool:
        """True while the laser emits. Raises ProtocolError on a malformed reply, InstrumentTimeout if the device does
        not answer."""

    @abstractmethod
    def current_setpoint(self) -> float:
        """Current setpoint in A. Raises ProtocolError on a malformed reply, InstrumentTimeout if the device does not
        answer."""

    @abstractmethod
    def measured_current(self) -> float:
        """Measured diode current in A (0 when off). Raises ProtocolError on a malformed reply, InstrumentTimeout if
        the device does not answer."""

    @abstractmethod
    def temperature_setpoint(self) -> float:
        """TEC temperature setpoint in °C. Raises ProtocolError on a malformed reply, InstrumentTimeout if the device
        does not answer."""

    @abstractmethod
    def measured_temperature(self) -> float:
        """Measured TEC temperature in °C. Raises ProtocolError on a malformed reply, InstrumentTimeout if the device
        does not answer."""

    @abstractmethod
    def measured_power(self) -> float:
        """Optical power in mW as measured by the device's monitor (0 when off; NaN without a calibrated monitor).
        Raises ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""

    @abstractmethod
    def protection(self) -> dict[str, bool]:
        """Tripped state of each protection circuit, e.g. {"interlock": False, "keylock": False}. Raises ProtocolError
        on a malformed reply, InstrumentTimeout if the device does not answer."""
