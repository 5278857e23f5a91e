"""Simulated Tausand Abacus AB1004: the binary register protocol, counting the simulated lab's clicks on
inputs A–D in consecutive sampling periods."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
from qlab.drivers.tausand.abacus import (
    COUNT_REGISTERS,
    DATA_ID,
    DELAY_BASE,
    DELAY_MAX_NS,
    END,
    READ,
    SAMPLING,
    SAMPLING_S,
    SLEEP_BASE,
    START,
    TIME_LEFT,
    WINDOW,
    WINDOW_MAX_NS,
    WRITE,
    decode_timer,
    encode_timer,
    reply_frame,
)

from qlab.sim.device import DeviceSimulator


class AbacusSimulator(DeviceSimulator):
    """An AB1004 counting the simulated lab's clicks on its inputs A–D in consecutive sampling periods."""

    model_id = "abacus"
    frame_end = b""  # binary register frames
    idn = b"Tausand Abacus AB1004"
    n_inputs = 4
    resolution_ns = 5

    def __init__(self, *a: Any, **k: Any):
        super().__init__(*a, **k)
        self.regs: dict[int, int] = {r: 0 for r in COUNT_REGISTERS.values()}
        for i in range(self.n_inputs):
            self.regs[DELAY_BASE + i] = 0
            self.regs[SLEEP_BASE + i] = encode_timer(25e-9)
        self.regs.update({SAMPLING: encode_timer(0.1), WINDOW: encode_timer(10e-9), DATA_ID: 0, TIME_LEFT: 0})
        self._streaming = False
        self._pending_t: list[np.ndarray] = []
        self._pending_c: list[np.ndarray] = []
        self._period_start: int | None = None

    def handle(self) -> None:
        buf = self.inbuf
        while buf:
            if buf.startswith(b"*IDN?"):
                del buf[:5]
                self.reply(self.idn)
                continue
            if buf[0] != START:
                del buf[:1]  # not a frame start: the device resynchronises silently
                continue
            if len(buf) < 8:
                return
            frame = bytes(buf[:8])
            del buf[:8]
            if frame[7] != END or frame[1] not in (READ, WRITE):
                continue  # malformed frame: ignored, as the hardware does
            address, data = frame[2], struct.unpack(">I", frame[3:7])[0]
            self._count_until_now()
            if frame[1] == READ:
                regs = [(a, self.regs[a]) for a in range(address, address + min(data, 64)) if a in self.regs]
                self.reply(reply_frame(regs))
            elif not self.device_error_active:  # a faulted Abacus ignores writes; read-back shows it
                self._write(address, data)

    def _write(self, address: int, data: int) -> None:
        if address == SAMPLING and any(math.isclose(decode_timer(data), s, rel_tol=1e-9) for s in SAMPLING_S):
            self.regs[SAMPLING] = data
            self._period_start = None  # a new setting restarts the counting period
        elif address == WINDOW and self._valid_ns(data, self.resolution_ns, WINDOW_MAX_NS):
            self.regs[WINDOW] = data
        elif DELAY_BASE <= address < DELAY_BASE + self.n_inputs and self._valid_ns(data, 0, DELAY_MAX_NS):
            self.regs[address] = data
            if self.lab is not None:
                self.lab.set_tagger_input(self.name, address - DELAY_BASE + 1,
                                          delay_ps=int(round(decode_timer(data) * 1e12)))
        elif SLEEP_BASE <= address < SLEEP_BASE + self.n_inputs and self._valid_ns(data, 0, DELAY_MAX_NS):
            self.regs[address] = data
        # anything else (counts, dataID, bad values) is ignored without a reply

    def _valid_ns(self, bits: int, lo: float, hi: float) -> bool:
        ns = decode_timer(bits) * 1e9
        return lo <= ns <= hi and abs(ns / self.resolution_ns - round(ns / self.resolution_ns)) < 1e-6

    def _count_until_now(self) -> None:
        """Close every sampling period that has ended; the registers show the last one."""
        if self.lab is None:
            return
        if not self._streaming:
            self.lab.start_stream(self.name, lossless=True)
            self._streaming = True
        chunk = self.lab.read_tags(self.name)
        if self._period_start is None:
            self._period_start = chunk.t_start_ps
            self._pending_t, self._pending_c = [], []
        self._pending_t.append(chunk.timestamps)
        self._pending_c.append(chunk.channels)
        period = int(round(decode_timer(self.regs[SAMPLING]) * 1e12))
        n_done = (chunk.t_stop_ps - self._period_start) // period
        if n_done > 0:
            ts, ch = np.concatenate(self._pending_t), np.concatenate(self._pending_c)
            last_start = self._period_start + (n_done - 1) * period
            lo, hi = np.searchsorted(ts, [last_start, last_start + period])
            self._latch(ts[lo:hi], ch[lo:hi])
            self._period_start += n_done * period
            keep = ts >= self._period_start
            self._pending_t, self._pending_c = [ts[keep]], [ch[keep]]
            self.regs[DATA_ID] = (self.regs[DATA_ID] + int(n_done)) & 0xFFFFFFFF
        self.regs[TIME_LEFT] = int((self._period_start + period - chunk.t_stop_ps) / 1e9)

    def _latch(self, ts: np.ndarray, ch: np.ndarray) -> None:
        from qlab.stream.coincidence import CoincidenceCounter
        from qlab.types import TagChunk

        window_ps = int(round(decode_timer(self.regs[WINDOW]) * 1e12))
        # Pulses stretched to the window overlap when they are less than one window apart.
        res = CoincidenceCounter(list(range(1, self.n_inputs + 1)), 2 * window_ps).process(
            TagChunk(ts, ch, int(ts[0]) if ts.size else 0, int(ts[-1]) + 1 if ts.size else 0))
        for label, reg in COUNT_REGISTERS.items():
            chans = [ord(c) - 64 for c in label]
            self.regs[reg] = res.single(chans[0]) if len(chans) == 1 else res.pair(*chans)
