"""Swabian Instruments Time Tagger (Ultra / X / 20): driver over the vendor SDK.

The vendor ``TimeTagger`` Python module needs the hardware (and its installer), so it is imported only
when a real device is opened. On the simulated lab the same driver code runs against ``SimulatedSDK``,
an API-level stand-in whose timestamps come from the SimLab.

Config block::

    tagger:
      driver: swabian.timetagger
      backend: "1910000ABC"     # device serial ("" = first found), or sim
      settings: {trigger_levels_v: {1: 0.5}, delays_ps: {1: 0}}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qlab.errors import InstrumentError
from qlab.instruments.tagger import TimeTagger
from qlab.types import Identification, TagChunk

TIME_TAG, ERROR, OVERFLOW_BEGIN, OVERFLOW_END, MISSED_EVENTS = 0, 1, 2, 3, 4


class SwabianTimeTagger(TimeTagger):
    model = "Swabian Time Tagger"
    transport_kind = "sdk"
    stream_buffer_events = 50_000_000

    def __init__(self, *args: Any, sdk: Any = None, **kw: Any):
        super().__init__(*args, **kw)
        self._sdk = sdk
        self._tt: Any = None
        self._stream: Any = None
        self._t_last = 0

    def _open(self) -> None:
        if self._sdk is None:
            try:
                import TimeTagger as sdk  # vendor SDK, present only on machines with the hardware installed
            except ImportError:
                raise InstrumentError(self.name, "the Swabian 'TimeTagger' Python module is not installed; "
                                                 "install the vendor software or use backend: sim") from None
            self._sdk = sdk
        serial = self.options.get("backend", "")
        self._tt = self._sdk.createTimeTagger("" if serial in ("", "sim") else serial)
        if self._tt is None:
            raise InstrumentError(self.name, f"no Swabian Time Tagger with serial {serial!r}")
        self._channels = list(self._tt.getChannelList(self._sdk.ChannelEdge.Rising))

    def _close(self) -> None:
        self.stop_stream()
        if self._tt is not None:
            self._sdk.freeTimeTagger(self._tt)
            self._tt = None

    def identify(self) -> Identification:
        """Model and serial as the SDK reports them."""
        return Identification("Swabian Instruments", self._tt.getModel(), self._tt.getSerial())

    def channels(self) -> list[int]:
        return self._channels

    def _set_delay(self, channel: int, delay_ps: int) -> None:
        self._tt.setInputDelay(channel, delay_ps)

    def delay(self, channel: int) -> int:
        return int(self._tt.getInputDelay(channel))

    def _set_trigger_level(self, channel: int, level_v: float) -> None:
        self._tt.setTriggerLevel(channel, level_v)

    def trigger_level(self, channel: int) -> float:
        return float(self._tt.getTriggerLevel(channel))

    def start_stream(self, channels: list[int] | None = None) -> None:
        self._require_open()
        self.stop_stream()
        self._stream = self._sdk.TimeTagStream(self._tt, self.stream_buffer_events, channels or self._channels)
        self._stream.start()

    def stop_stream(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream = None

    def read_chunk(self) -> TagChunk:
        self._require_open()
        if self._stream is None:
            self.start_stream()
        buf = self._stream.getData()
        ts = np.asarray(buf.getTimestamps(), np.int64)
        ch = np.asarray(buf.getChannels())
        types = np.asarray(buf.getEventTypes())
        is_tag = types == TIME_TAG
        gaps = np.zeros((0, 2), np.int64)
        if not is_tag.all():
            begins = ts[types == OVERFLOW_BEGIN]
            ends = ts[types == OVERFLOW_END]
            n = min(begins.size, ends.size)
            gaps = np.stack([begins[:n], ends[:n]], axis=1) if n else gaps
            ts, ch = ts[is_tag], ch[is_tag]
        missed = int(np.asarray(buf.getMissedEvents()).sum()) if buf.size else 0
        return TagChunk(ts, ch.astype(np.int16), int(buf.tStart), int(buf.tGetData), gaps, missed)
