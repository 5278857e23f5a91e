"""Abstract laser (pump or source laser with optional TEC)."""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from typing import Any

from qlab.errors import InterlockError
from qlab.instruments.base import Instrument
from qlab.instruments.settings import bind


class Laser(Instrument):
    kind = "laser"
    SETTINGS = bind(
        "laser",
        output=("output", "set_output"),  # the public one: interlock checks apply whoever writes
        current=("current_setpoint", "_set_current"),
        power=(None, "_set_power"),
        temperature=("temperature_setpoint", "_set_temperature"),
        current_meas=("measured_current", None),
        temperature_meas=("measured_temperature", None),
        power_meas=("measured_power", None),
        protection=("protection", None),
    )

    # -- public, limit-checked API ---------------------------------------------------------------------
    def set_current(self, current_a: float) -> None:
        """Laser-diode current setpoint in A. Raises LimitError outside ``limits.current_a``, InstrumentError if not
        open or the device refuses, ProtocolError on a malformed reply, InstrumentTimeout if the device does not
        answer."""
        self.write_setting("current", current_a)

    def set_power(self, power_mw: float) -> None:
        """Optical power setpoint in mW (constant-power mode where the device has it). Raises LimitError outside
        ``limits.power_mw``, NotImplementedError where the model has no such mode, InstrumentError if not open or
        refused, ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self.write_setting("power", power_mw)

    def set_temperature(self, temperature_c: float) -> None:
        """TEC temperature setpoint in °C. Raises LimitError outside ``limits.temperature_c``, InstrumentError if not
        open or the device refuses, ProtocolError on a malformed reply, InstrumentTimeout if the device does not
        answer."""
        self.write_setting("temperature", temperature_c)

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
        if not on:
            self._set_output(False)
            self.record_set(self.SETTINGS["output"], False)
            return
        try:
            self._set_output(True)
            if not self.output():
                raise InterlockError(self.name, f"output did not switch on (protection: {self.protection()})")
        except BaseException:
            # The command may have reached the device and light may be coming out: send off before reporting.
            with contextlib.suppress(Exception):
                self._set_output(False)
            self.record_set(self.SETTINGS["output"], False)
            raise
        self.record_set(self.SETTINGS["output"], True)

    def safe_state(self) -> None:
        """Output off (nothing if not open). Errors as ``set_output``."""
        if self._is_open:
            self._set_output(False)
            self.record_set(self.SETTINGS["output"], False)

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
