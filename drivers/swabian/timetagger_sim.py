"""Simulated Swabian Time Tagger SDK: the subset of the vendor ``TimeTagger`` module qlab uses, whose
timestamps come from the simulated lab. The driver runs unchanged on it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from qlab.drivers.swabian.timetagger import OVERFLOW_BEGIN, OVERFLOW_END, ArrayStreamBuffer, SwabianTimeTagger

from qlab.sim.faults import FaultInjectable, lost_chunk
from qlab.types import TagChunk

DISCONNECTED = "Time Tagger disconnected: USB device lost (simulated)"


def build_simulated(name: str, sim: Any, limits: Any, cfg: Any, options: dict) -> SwabianTimeTagger:
    """A Swabian driver on a simulated SDK fed by tagger ``name`` of ``sim``."""
    sdk = SimulatedSDK(sim, name)
    sim.device_sims[name] = sdk
    return SwabianTimeTagger(name, limits=limits, clock=sim.clock, options=options, sdk=sdk)


class _SimTagger:
    def __init__(self, lab: Any, name: str, sdk: SimulatedSDK):
        self.lab, self.name, self.sdk = lab, name, sdk
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
        self.sdk.check_call()
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


def _sim_buffer(chunk: TagChunk, channels: set[int], all_inputs: set[int]) -> ArrayStreamBuffer:
    """The SDK's stream buffer for one simulated chunk: tags of ``channels`` plus overflow begin/end events."""
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
    return ArrayStreamBuffer(ts, ch, types, bool(len(chunk.gaps)), chunk.t_start_ps, chunk.t_stop_ps)


class _SimStream:
    def __init__(self, tagger: _SimTagger, n_max: int, channels: list[int]):
        self.tagger, self.n_max, self.channels = tagger, n_max, set(channels)

    def start(self) -> None:
        self.tagger.lab.start_stream(self.tagger.name)

    def stop(self) -> None:
        self.tagger.lab.stop_stream(self.tagger.name)

    def getData(self) -> ArrayStreamBuffer:  # noqa: N802
        sdk = self.tagger.sdk
        sdk.check_call()
        fault = sdk.active_fault()
        lab, name = self.tagger.lab, self.tagger.name
        if fault == "silent":  # the device delivers nothing and its time does not advance
            t = lab.taggers[name].t_read_ps
            return _sim_buffer(TagChunk(np.zeros(0, np.int64), np.zeros(0, np.int16), t, t), self.channels,
                              set(self.tagger.inputs))
        chunk = lab.read_tags(name)
        if fault == "overflow":
            chunk = lost_chunk(chunk)
        buf = _sim_buffer(chunk, self.channels, set(self.tagger.inputs))
        if fault == "garbage" and buf.size:
            rng = np.random.default_rng(sdk.faults.rng.getrandbits(32))
            buf._ts = rng.integers(-(1 << 62), 1 << 62, buf.size)
            buf._ch = rng.integers(-100, 100, buf.size).astype(np.int32)
            buf._types = rng.integers(0, 256, buf.size).astype(np.uint8)
        elif fault == "truncated" and buf.size:
            buf._ch = buf._ch[: buf.size // 2]
        return buf


class SimulatedSDK(FaultInjectable):
    """The subset of the vendor ``TimeTagger`` module qlab uses, fed by the SimLab. Faults (qlab.sim.faults): the
    SDK raises RuntimeError as the vendor's does (disconnect, device error), delivers no data (silent), corrupt or
    inconsistent buffers (garbage, truncated) or overflow events (overflow)."""

    model_id = "swabian"
    ChannelEdge = SimpleNamespace(Rising=1, Falling=2, Both=3)

    def __init__(self, lab: Any, name: str):
        self.lab, self.name = lab, name
        self._init_faults(lab.clock.now, name)

    def check_call(self) -> None:
        """What the vendor SDK raises for a call while a fault is in effect."""
        fault = self.active_fault()
        if fault == "disconnect":
            raise RuntimeError(DISCONNECTED)
        if fault == "device-error":
            raise RuntimeError("Time Tagger error: FPGA communication failure (simulated)")

    def createTimeTagger(self, serial: str = "") -> _SimTagger | None:  # noqa: N802
        tagger = _SimTagger(self.lab, self.name, self)
        return tagger if serial in ("", tagger.serial) else None

    def freeTimeTagger(self, tagger: _SimTagger) -> None:  # noqa: N802
        self.lab.stop_stream(tagger.name)

    def TimeTagStream(self, tagger: _SimTagger, n_max: int, channels: list[int]) -> _SimStream:  # noqa: N802
        return _SimStream(tagger, n_max, channels)
