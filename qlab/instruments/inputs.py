"""What taggers and coincidence counters share: numbered inputs, each with a delay set in ps."""

from __future__ import annotations

from abc import abstractmethod

from qlab.errors import InstrumentError
from qlab.instruments.base import Instrument


class InputInstrument(Instrument):
    """An instrument whose detectors plug into numbered inputs (``channels()``)."""

    def set_delay(self, channel: int, delay_ps: int) -> None:
        """Delay added to input ``channel``, in ps, before its events are time-ordered or compared.
        Raises InstrumentError for an unknown input, LimitError outside the ``delay_ps`` limits."""
        self.write_setting("delay", delay_ps, channel)

    def _check_channel(self, channel: int) -> None:
        if channel not in self.channels():
            raise InstrumentError(self.name, f"no input {channel}; inputs are {self.channels()}")

    @abstractmethod
    def channels(self) -> list[int]: ...

    @abstractmethod
    def _set_delay(self, channel: int, delay_ps: int) -> None: ...

    @abstractmethod
    def delay(self, channel: int) -> int: ...
