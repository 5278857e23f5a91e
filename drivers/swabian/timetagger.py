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

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from qlab.drivers.guard import StreamWatch

from qlab.errors import InstrumentDisconnected, InstrumentError, ProtocolError, QlabError
from qlab.instruments.tagger import TimeTagger
from qlab.types import Identification, TagChunk

TIME_TAG, ERROR, OVERFLOW_BEGIN, OVERFLOW_END, MISSED_EVENTS = 0, 1, 2, 3, 4


class ArrayStreamBuffer:
    """The SDK's ``TimeTagStreamBuffer`` reading interface over plain arrays, for the SDK stand-ins (the
    simulated SDK and its remote client): timestamps (int64 ps), channels, event types and missed-event
    counts; ``tStart``/``tGetData`` the covered span (ps)."""

    def __init__(self, ts: np.ndarray, ch: np.ndarray, types: np.ndarray, has_overflows: bool, t_start: int,
                 t_stop: int, missed: np.ndarray | None = None):
        self._ts, self._ch, self._types = ts, ch, types
        self.size = int(ts.size)
        self._missed = missed
        self.hasOverflows = bool(has_overflows)
        self.tStart, self.tGetData = int(t_start), int(t_stop)

    def getTimestamps(self) -> np.ndarray:  # noqa: N802
        return self._ts

    def getChannels(self) -> np.ndarray:  # noqa: N802
        return self._ch

    def getEventTypes(self) -> np.ndarray:  # noqa: N802
        return self._types

    def getMissedEvents(self) -> np.ndarray:  # noqa: N802
        return self._missed if self._missed is not None else np.zeros(self.size, np.uint16)


class SwabianTimeTagger(TimeTagger):
    model = "Swabian Time Tagger"
    transport_kind = "sdk"
    stream_buffer_events = 50_000_000
    stream_stall_s = 2.0  # the device's time has not advanced for this long: it stopped delivering

    def __init__(self, *args: Any, sdk: Any = None, **kw: Any):
        super().__init__(*args, **kw)
        self._sdk = sdk
        self._tt: Any = None
        self._stream: Any = None
        self._t_last = 0
        self._watch = StreamWatch(self.name, self.clock, self.stream_stall_s)

    @contextmanager
    def _sdk_errors(self, what: str) -> Iterator[None]:
        """The vendor SDK raises RuntimeError / ValueError for device errors (a lost USB link among them): report
        them as InstrumentDisconnected or InstrumentError naming this instrument."""
        try:
            yield
        except QlabError:
            raise
        except ConnectionError as exc:
            raise InstrumentDisconnected(self.name, f"{what}: {exc}") from None
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            text = str(exc)
            if "disconnect" in text.lower() or "usb" in text.lower():
                raise InstrumentDisconnected(self.name, f"{what}: {text}") from None
            raise InstrumentError(self.name, f"{what}: {text}") from None

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
        with self._sdk_errors("set input delay"):
            self._tt.setInputDelay(channel, delay_ps)

    def delay(self, channel: int) -> int:
        with self._sdk_errors("get input delay"):
            return int(self._tt.getInputDelay(channel))

    def _set_trigger_level(self, channel: int, level_v: float) -> None:
        with self._sdk_errors("set trigger level"):
            self._tt.setTriggerLevel(channel, level_v)

    def trigger_level(self, channel: int) -> float:
        with self._sdk_errors("get trigger level"):
            return float(self._tt.getTriggerLevel(channel))

    def start_stream(self, channels: list[int] | None = None) -> None:
        self._require_open()
        self.stop_stream()
        with self._sdk_errors("start stream"):
            self._stream = self._sdk.TimeTagStream(self._tt, self.stream_buffer_events, channels or self._channels)
            self._stream.start()
        self._watch.reset()

    def stop_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with self._sdk_errors("stop stream"):
                stream.stop()

    def read_chunk(self) -> TagChunk:
        self._require_open()
        if self._stream is None:
            self.start_stream()
        with self._sdk_errors("read stream"):
            buf = self._stream.getData()
            ts = np.asarray(buf.getTimestamps(), np.int64)
            ch = np.asarray(buf.getChannels())
            types = np.asarray(buf.getEventTypes())
            t_start, t_stop = int(buf.tStart), int(buf.tGetData)
        self._check_buffer(ts, ch, types)
        self._watch.update(t_stop > t_start)
        is_tag = types == TIME_TAG
        gaps = np.zeros((0, 2), np.int64)
        if not is_tag.all():
            begins = ts[types == OVERFLOW_BEGIN]
            ends = ts[types == OVERFLOW_END]
            n = min(begins.size, ends.size)
            gaps = np.stack([begins[:n], ends[:n]], axis=1) if n else gaps
            ts, ch = ts[is_tag], ch[is_tag]
        with self._sdk_errors("read missed events"):
            missed = int(np.asarray(buf.getMissedEvents()).sum()) if buf.size else 0
        return TagChunk(ts, ch.astype(np.int16), t_start, t_stop, gaps, missed)

    def _check_buffer(self, ts: np.ndarray, ch: np.ndarray, types: np.ndarray) -> None:
        """ProtocolError for a buffer no healthy device delivers: arrays of different lengths, unknown event types,
        tags on inputs the device does not have, time running backwards."""
        if not ts.shape == ch.shape == types.shape or ts.ndim != 1:
            raise ProtocolError(self.name, f"stream buffer arrays disagree: {ts.size} timestamps, {ch.size} channels, "
                                           f"{types.size} event types")
        if types.size and (types.min() < TIME_TAG or types.max() > MISSED_EVENTS):
            raise ProtocolError(self.name, f"stream buffer has unknown event types {np.unique(types)[:5]}")
        tags = types == TIME_TAG
        if tags.any() and not np.isin(ch[tags], self._channels).all():
            raise ProtocolError(self.name, f"tags on inputs the device lacks: {np.unique(ch[tags])[:5]}")
