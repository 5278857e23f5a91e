"""Abstract coincidence unit (a hardware coincidence counter): counts singles and pair coincidences over a
sampling period and reports the totals, no timestamps. Inputs are numbered 1.. in qlab, A.. on the panel."""

from __future__ import annotations

import string
from abc import abstractmethod
from dataclasses import dataclass

from qlab.instruments.inputs import InputInstrument
from qlab.instruments.settings import bind


def letter(channel: int) -> str:
    return string.ascii_uppercase[channel - 1]


@dataclass
class CounterReading:
    """One sampling period: ``counts`` by front-panel label ("A", "AB", ...), ``sampling_s`` its length in s,
    ``data_id`` the device's sequence number of the period."""

    counts: dict[str, int]
    sampling_s: float
    data_id: int

    def single(self, channel: int) -> int:
        return self.counts[letter(channel)]

    def pair(self, a: int, b: int) -> int:
        x, y = sorted((a, b))
        return self.counts[letter(x) + letter(y)]

    def rate_hz(self, label: str) -> float:
        return self.counts[label] / self.sampling_s


class CoincidenceUnit(InputInstrument):
    kind = "counter"
    SETTINGS = bind("counter", sampling=("sampling_time", "_set_sampling_time"),
                    coincidence_window=("coincidence_window", "_set_coincidence_window"),
                    delay=("delay", "_set_delay"))

    def set_sampling_time(self, sampling_s: float) -> None:
        """Length of one counting period, in s. Raises LimitError outside ``limits.sampling_s``, InstrumentError if
        not open or the device does not take the value, ProtocolError on a malformed reply, InstrumentTimeout if the
        device does not answer."""
        self.write_setting("sampling", sampling_s)

    def set_coincidence_window(self, window_ps: int) -> None:
        """Two clicks closer than ``window_ps`` (ps) count as a coincidence. Raises LimitError outside
        ``limits.coincidence_window_ps``, InstrumentError if not open or the device does not take the value,
        ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self.write_setting("coincidence_window", window_ps)

    @abstractmethod
    def read(self, wait_new: bool = True) -> CounterReading:
        """The latest completed sampling period; with ``wait_new`` one that completed after this call. Raises
        InstrumentError if not open or no new period arrives, ProtocolError on a malformed reply, InstrumentTimeout if
        the device does not answer."""

    @abstractmethod
    def _set_sampling_time(self, sampling_s: float) -> None: ...

    @abstractmethod
    def sampling_time(self) -> float:
        """Length of one counting period in s. Raises ProtocolError on a malformed reply, InstrumentTimeout if the
        device does not answer."""

    @abstractmethod
    def _set_coincidence_window(self, window_ps: int) -> None: ...

    @abstractmethod
    def coincidence_window(self) -> int:
        """Coincidence window in ps. Raises ProtocolError on a malformed reply, InstrumentTimeout if the device does
        not answer."""
