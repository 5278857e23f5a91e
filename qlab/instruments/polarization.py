"""Abstract polarization controller: motorized waveplates or fibre paddles, one or more axes."""

from __future__ import annotations

from abc import abstractmethod

from qlab.errors import InstrumentError, InstrumentTimeout
from qlab.instruments.base import Instrument
from qlab.instruments.settings import bind


class PolarizationController(Instrument):
    kind = "polarization"
    poll_interval_s = 0.02
    move_timeout_s = 30.0
    # Writing a position moves and waits (move_absolute); the cache records the target once there.
    SETTINGS = bind("polarization",
                    position=("position", lambda inst, axis, deg: inst.move_absolute(deg, axis)))

    def axes(self) -> list[str]:
        """Configured axis names (``axes`` of the config; "0" for a single unnamed axis)."""
        return list(self.options.get("axes", {}) or ["0"])

    def _axis(self, axis: str | None) -> str:
        names = self.axes()
        if axis is None:
            if len(names) != 1:
                raise InstrumentError(self.name, f"name an axis: one of {names}")
            return names[0]
        if axis not in names:
            raise InstrumentError(self.name, f"unknown axis {axis!r}; expected one of {names}")
        return axis

    def move_absolute(self, position_deg: float, axis: str | None = None, wait: bool = True) -> None:
        """Move ``axis`` (None: the only axis) to ``position_deg`` degrees; with ``wait`` return when it stops. Raises
        LimitError outside ``limits.position_deg``, InstrumentError for an unknown axis, a closed instrument or a
        device refusal, InstrumentTimeout if the move outlasts ``move_timeout_s`` s or the device is silent,
        ProtocolError on a malformed reply."""
        s, ax, target = self.check_setting("position", position_deg, axis)
        self._move_absolute(ax, target)
        if wait:
            self.wait(ax)
            self.record_set(s, target, ax)

    def move_relative(self, delta_deg: float, axis: str | None = None, wait: bool = True) -> None:
        """Move ``axis`` by ``delta_deg`` degrees; the resulting position is checked against ``limits.position_deg``
        first. Errors as ``move_absolute``."""
        self._require_open()
        ax = self._axis(axis)
        target = self.limits.check("position_deg", self.position(ax) + delta_deg)
        self._move_relative(ax, float(delta_deg))
        if wait:
            self.wait(ax)
            self.record_set(self.SETTINGS["position"], target, ax)

    def home(self, axis: str | None = None, wait: bool = True) -> None:
        """Move ``axis`` to its home position (0°). Errors as ``move_absolute`` (no LimitError)."""
        self._require_open()
        ax = self._axis(axis)
        self._home(ax)
        if wait:
            self.wait(ax)

    def wait(self, axis: str | None = None) -> None:
        """Poll until ``axis`` stops moving. Raises InstrumentTimeout after ``move_timeout_s`` s, and what ``is_busy``
        raises."""
        ax = self._axis(axis)
        t0 = self.clock.now()
        while self.is_busy(ax):
            if self.clock.now() - t0 > self.move_timeout_s:
                raise InstrumentTimeout(self.name, f"axis {ax} still moving after {self.move_timeout_s} s")
            self.clock.sleep(self.poll_interval_s)

    def positions(self) -> dict[str, float]:
        """Position of every axis in degrees. Errors as ``position``."""
        return {ax: self.position(ax) for ax in self.axes()}

    @abstractmethod
    def _move_absolute(self, axis: str, position_deg: float) -> None: ...

    @abstractmethod
    def _move_relative(self, axis: str, delta_deg: float) -> None: ...

    @abstractmethod
    def _home(self, axis: str) -> None: ...

    @abstractmethod
    def position(self, axis: str | None = None) -> float:
        """Current position of ``axis`` in degrees. Raises InstrumentError for an unknown axis or a device error,
        ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""

    @abstractmethod
    def is_busy(self, axis: str | None = None) -> bool:
        """True while ``axis`` moves or homes. Raises InstrumentError for an unknown axis or a device error,
        ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
