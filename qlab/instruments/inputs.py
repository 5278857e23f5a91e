"""What taggers and coincidence counters share: numbered inputs, each with a delay set in ps."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from qlab.errors import InstrumentError
from qlab.instruments.base import Instrument


class InputInstrument(Instrument):
    """An instrument whose detectors plug into numbered inputs (``channels()``)."""

    def set_delay(self, channel: int, delay_ps: int) -> None:
        """Delay added to input ``channel``, in ps, before its events are time-ordered or compared."""
        self._require_open()
        self._check_channel(channel)
        self._set_delay(channel, int(self.limits.check("delay_ps", delay_ps)))

    def _check_channel(self, channel: int) -> None:
        if channel not in self.channels():
            raise InstrumentError(self.name, f"no input {channel}; inputs are {self.channels()}")

    def _apply_delays(self, delays_ps: Any) -> None:
        """The ``delays_ps: {input: ps}`` block of instruments.yaml settings."""
        for ch, d in dict(delays_ps).items():
            self.set_delay(int(ch), int(d))

    @abstractmethod
    def channels(self) -> list[int]: ...

    @abstractmethod
    def _set_delay(self, channel: int, delay_ps: int) -> None: ...

    @abstractmethod
    def delay(self, channel: int) -> int: ...
