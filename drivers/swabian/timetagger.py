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

from types import SimpleNamespace
from typing import Any

import numpy as np

from qlab.errors import InstrumentError
from qlab.instruments.tagger import TimeTagger
from qlab.types import TagChunk

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

    @classmethod
    def simulated(cls, name: str, sim: Any, limits: Any, cfg: Any, options: dict) -> SwabianTimeTagger:
        sdk = SimulatedSDK(sim, name)
        sim.device_sims[name] = sdk
        return cls(name, limits=limits, clock=sim.clock, options=options, sdk=sdk)

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

    def identify(self) -> str:
        return f"Swabian {self._tt.getModel()} serial {self._tt.getSerial()}"

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


# ==== simulated SDK ===========================================================================================

class _SimTagger:
    def __init__(self, lab: Any, name: str):
        self.lab, self.name = lab, name
        st = lab.taggers[name]
        self.serial = st.p.serial
        wired = [d.input for d in lab.detectors.values() if d.tagger == name]
        self.inputs = list(range(1, max([8, *wired]) + 1))
        self.delays = {c: 0 for c in self.inputs}
        self.levels = {c: 0.5 for c in self.inputs}

    def getSerial(self) -> str:  # noqa: N802 - vendor API names
        return self.serial

    def getModel(self) -> str:  # noqa: N802
        return "Time Tagger Ultra (simulated)"

    def getChannelList(self, edge: int = 1) -> list[int]:  # noqa: N802
        return list(self.inputs)

    def _check(self, ch: int) -> None:
        if ch not in self.inputs:
            raise ValueError(f"invalid channel {ch}")

    def setInputDelay(self, ch: int, delay_ps: int) -> None:  # noqa: N802
        self._check(ch)
        self.delays[ch] = int(delay_ps)
        self.lab.set_tagger_input(self.name, ch, delay_ps=int(delay_ps))

    def getInputDelay(self, ch: int) -> int:  # noqa: N802
        self._check(ch)
        return self.delays[ch]

    def setTriggerLevel(self, ch: int, level_v: float) -> None:  # noqa: N802
        self._check(ch)
        level = float(np.clip(level_v, -2.5, 2.5))  # the Ultra's input range
        self.levels[ch] = level
        self.lab.set_tagger_input(self.name, ch, trigger_v=level)

    def getTriggerLevel(self, ch: int) -> float:  # noqa: N802
        self._check(ch)
        return self.levels[ch]


class _SimBuffer:
    def __init__(self, chunk: TagChunk, channels: set[int], all_inputs: set[int]):
        ts, ch = chunk.timestamps, chunk.channels.astype(np.int32)
        if not channels >= all_inputs:  # filtering costs a pass over the data; skip it when nothing is excluded
            keep = np.isin(ch, list(channels))
            ts, ch = ts[keep], ch[keep]
        types = np.zeros(ts.size, np.uint8)
        if len(chunk.gaps):
            g = chunk.gaps
            ts = np.concatenate([ts, g[:, 0], g[:, 1]])
            ch = np.concatenate([ch, np.zeros(2 * len(g), np.int32)])
            types = np.concatenate([types, np.full(len(g), OVERFLOW_BEGIN, np.uint8),
                                    np.full(len(g), OVERFLOW_END, np.uint8)])
            order = np.argsort(ts, kind="stable")
            ts, ch, types = ts[order], ch[order], types[order]
        self._ts, self._ch, self._types = ts, ch, types
        self.size = int(ts.size)
        self.hasOverflows = bool(len(chunk.gaps))
        self.tStart, self.tGetData = chunk.t_start_ps, chunk.t_stop_ps

    def getTimestamps(self) -> np.ndarray:  # noqa: N802
        return self._ts

    def getChannels(self) -> np.ndarray:  # noqa: N802
        return self._ch

    def getEventTypes(self) -> np.ndarray:  # noqa: N802
        return self._types

    def getMissedEvents(self) -> np.ndarray:  # noqa: N802
        return np.zeros(self.size, np.uint16)


class _SimStream:
    def __init__(self, tagger: _SimTagger, n_max: int, channels: list[int]):
        self.tagger, self.n_max, self.channels = tagger, n_max, set(channels)

    def start(self) -> None:
        self.tagger.lab.start_stream(self.tagger.name)

    def stop(self) -> None:
        self.tagger.lab.stop_stream(self.tagger.name)

    def getData(self) -> _SimBuffer:  # noqa: N802
        return _SimBuffer(self.tagger.lab.read_tags(self.tagger.name), self.channels, set(self.tagger.inputs))


class SimulatedSDK:
    """The subset of the vendor ``TimeTagger`` module qlab uses, fed by the SimLab."""

    model_id = "swabian"
    ChannelEdge = SimpleNamespace(Rising=1, Falling=2, Both=3)

    def __init__(self, lab: Any, name: str):
        self.lab, self.name = lab, name

    def createTimeTagger(self, serial: str = "") -> _SimTagger | None:  # noqa: N802
        tagger = _SimTagger(self.lab, self.name)
        return tagger if serial in ("", tagger.serial) else None

    def freeTimeTagger(self, tagger: _SimTagger) -> None:  # noqa: N802
        self.lab.stop_stream(tagger.name)

    def TimeTagStream(self, tagger: _SimTagger, n_max: int, channels: list[int]) -> _SimStream:  # noqa: N802
        return _SimStream(tagger, n_max, channels)
