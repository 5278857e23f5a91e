"""Lifecycle shared by every instrument: open/close, context manager, identify, snapshot, status."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from qlab.errors import InstrumentError
from qlab.instruments.clock import Clock, WallClock
from qlab.instruments.limits import Limits
from qlab.types import Identification

log = logging.getLogger(__name__)


class Instrument(ABC):
    """Base of all drivers. Subclasses implement ``_open``/``_close`` and the kind's abstract operations.

    Public setters validate against ``limits`` *before* calling the driver's private method, so no
    driver can send an out-of-range setpoint whichever caller asks for it.
    """

    kind: ClassVar[str] = ""
    model: ClassVar[str] = ""

    def __init__(self, name: str, transport: Any = None, limits: Limits | None = None,
                 clock: Clock | None = None, options: dict[str, Any] | None = None):
        self.name = name
        self.transport = transport
        self.limits = limits or Limits(name)
        self.clock: Clock = clock or WallClock()
        self.options = dict(options or {})
        self._is_open = False

    # -- lifecycle --------------------------------------------------------------------------------------
    def open(self) -> Instrument:
        if not self._is_open:
            self._open()
            self._is_open = True
            log.info("%s: opened %s", self.name, self.model)
        return self

    def close(self) -> None:
        if self._is_open:
            try:
                self.safe_state()
            finally:
                try:
                    self._close()
                finally:
                    self._is_open = False
                    if self.transport is not None and hasattr(self.transport, "close"):
                        self.transport.close()

    def __enter__(self) -> Instrument:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._is_open

    def _require_open(self) -> None:
        if not self._is_open:
            raise InstrumentError(self.name, "instrument is not open")

    def _open(self) -> None:  # noqa: B027 - optional hook
        """Connect and check the device answers. Default: nothing to do."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release the device. Default: nothing to do."""

    # -- common operations ------------------------------------------------------------------------------
    @abstractmethod
    def identify(self) -> Identification:
        """Manufacturer, model, serial and firmware as the device reports them."""

    @abstractmethod
    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every setting with its unit: ``{"current_set": {"value": 0.1, "unit": "A"}, ...}``."""

    def status(self) -> dict[str, Any]:
        """Health summary; drivers extend it with device status bits."""
        return {"open": self._is_open, "model": self.model}

    def safe_state(self) -> None:  # noqa: B027 - lasers override
        """Put the instrument in a state that is safe to leave unattended (lasers: output off)."""

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Apply the ``settings`` block of instruments.yaml; kinds override to map keys to setters."""
        if settings:
            raise InstrumentError(self.name, f"{self.kind} does not take settings {sorted(settings)}")


def value(v: Any, unit: str) -> dict[str, Any]:
    """One snapshot entry."""
    return {"value": v, "unit": unit}
