"""Tausand Abacus AB1004 / AB1504 / AB1904 four-input coincidence counters: binary register protocol over
USB serial (115200 8N1), and a simulator counting the lab's clicks. (The 2-input AB1x02 use a different
frame and register map and the 8-input AB1x08 more registers; the driver refuses them rather than guess.)

``*IDN?`` (ASCII) answers ``Tausand Abacus AB1004``; the model number gives the inputs (last digit) and
the time resolution (AB10xx 5 ns, AB15xx 2 ns, AB19xx 1 ns). Registers hold 32-bit big-endian values:

- request ``02 <cmd> <addr> <d3 d2 d1 d0> 04``; cmd 0x0E reads ``d`` registers from ``addr``, 0x0F writes
  ``d`` to ``addr`` (no reply);
- reply ``7E <N> [addr b3 b2 b1 b0]… <chk>``, N data bytes, valid when the data bytes plus ``chk`` sum to
  0xFF modulo 256.

Counts: A=0 AB=1 AC=2 AD=3 B=9 BC=10 BD=11 C=18 CD=19 D=27 (last completed sampling period); delays 64–71
(inputs A–H), sleep 72–79, sampling 80, coincidence window 81, dataID 83 (changes on new data), time left
to the next period 84 (ms). Timers are ``e << 12 | c`` meaning c·10^(e−10) s with two significant digits
(c in 10–99, or 0). The device does not acknowledge writes or answer malformed frames, so the driver reads
every setting back and reports a silent device as a timeout.

Config block::

    counter:
      driver: tausand.abacus
      backend: /dev/ttyACM0          # or sim
      limits: {coincidence_window_ps: {min: 1000, max: 100000}}
      settings: {sampling_s: 0.1, coincidence_window_ps: 5000}
    alice_H: {..., channel: {tagger: counter, input: 1, role: alice.H}}   # input 1 = A
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any

import numpy as np

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.counter import CoincidenceUnit, CounterReading, letter
from qlab.sim.device import DeviceSimulator

READ, WRITE, START, END, REPLY = 0x0E, 0x0F, 0x02, 0x04, 0x7E
COUNT_REGISTERS = {"A": 0, "AB": 1, "AC": 2, "AD": 3, "B": 9, "BC": 10, "BD": 11, "C": 18, "CD": 19, "D": 27}
DELAY_BASE, SLEEP_BASE, SAMPLING, WINDOW, DATA_ID, TIME_LEFT = 64, 72, 80, 81, 83, 84
SAMPLING_S = tuple(c * 10.0 ** k for k in range(-3, 3) for c in (1, 2, 5)) + (1000.0,)  # 1 ms … 1000 s
DELAY_MAX_NS = 100
WINDOW_MAX_NS = 50_000
WRITE_ATTEMPTS = 3


# -- codec -------------------------------------------------------------------------------------------------------
def encode_timer(seconds: float) -> int:
    """``e << 12 | c`` for c·10^(e−10) s; ValueError if ``seconds`` needs more than two significant digits."""
    if seconds == 0:
        return 0
    e = math.floor(math.log10(seconds)) + 10 - 1
    c = round(seconds / 10.0 ** (e - 10))
    if c == 100:
        c, e = 10, e + 1
    if not (10 <= c <= 99 and 0 <= e <= 12) or not math.isclose(c * 10.0 ** (e - 10), seconds, rel_tol=1e-9):
        raise ValueError(f"{seconds} s is not representable as two significant digits")
    return e << 12 | c


def decode_timer(bits: int) -> float:
    return (bits & 0xFFF) * 10.0 ** ((bits >> 12) - 10) if bits else 0.0


def request_frame(cmd: int, address: int, data: int) -> bytes:
    return bytes([START, cmd, address]) + struct.pack(">I", data) + bytes([END])


def reply_frame(registers: list[tuple[int, int]]) -> bytes:
    body = b"".join(bytes([a]) + struct.pack(">I", v & 0xFFFFFFFF) for a, v in registers)
    return bytes([REPLY, len(body)]) + body + bytes([(0xFF - sum(body)) & 0xFF])


# -- driver ------------------------------------------------------------------------------------------------------
class Abacus(CoincidenceUnit):
    model = "Tausand Abacus"
    transport_kind = "serial"
    baudrate = 115200
    write_termination = b""
    read_termination = b"\n"

    def _open(self) -> None:
        with self.transport.lock:
            self.transport.drain()
            self.transport.write(b"*IDN?")
            idn = self.transport.read_exact(21).decode("ascii", "replace")
            self.transport.drain()  # some firmware pads the name with a newline and NULs
        m = re.fullmatch(r"Tausand Abacus AB1([059])0(4)", idn)
        if m is None:
            raise ProtocolError(self.name, f"*IDN? answered {idn!r}: not a four-input AB1000-family Tausand "
                                           "Abacus (AB1004/1504/1904), the models this driver speaks")
        self._idn = idn
        self.resolution_ns = {"0": 5, "5": 2, "9": 1}.get(m.group(1), 5)
        self.n_inputs = int(m.group(2))

    def identify(self) -> str:
        return f"{self._idn} ({self.n_inputs} inputs, {self.resolution_ns} ns resolution)"

    def channels(self) -> list[int]:
        return list(range(1, self.n_inputs + 1))

    # -- registers -----------------------------------------------------------------------------------------
    def read_registers(self, address: int, count: int) -> dict[int, int]:
        with self.transport.lock:
            self.transport.write(request_frame(READ, address, count))
            head = self.transport.read_exact(2)
            if head[0] != REPLY:
                raise ProtocolError(self.name, f"reply starts with {head[0]:#04x}, expected 0x7e")
            body = self.transport.read_exact(head[1] + 1)
        data, chk = body[:-1], body[-1]
        if (sum(data) + chk) & 0xFF != 0xFF or len(data) % 5:
            raise ProtocolError(self.name, f"corrupt reply to a read of {count} registers at {address}: "
                                           f"{(head + body).hex()}")
        return {data[i]: struct.unpack(">I", data[i + 1:i + 5])[0] for i in range(0, len(data), 5)}

    def write_register(self, address: int, data: int, what: str) -> None:
        """Write and read back; the device has no acknowledgement, so a value it refused shows up here."""
        for _ in range(WRITE_ATTEMPTS):
            self.transport.write(request_frame(WRITE, address, data))
            if self.read_registers(address, 1).get(address) == data:
                return
        raise InstrumentError(self.name, f"the device did not accept {what} (register {address} = {data:#x})")

    # -- settings ------------------------------------------------------------------------------------------
    def _timer_ns(self, value_ns: float, lo: float, hi: float, what: str) -> int:
        step = self.resolution_ns
        if not lo <= value_ns <= hi or abs(value_ns / step - round(value_ns / step)) > 1e-9:
            raise InstrumentError(self.name, f"{what} {value_ns:g} ns: the device takes {lo:g}–{hi:g} ns in "
                                             f"{step} ns steps")
        try:
            return encode_timer(value_ns * 1e-9)
        except ValueError as exc:
            raise InstrumentError(self.name, f"{what}: {exc}") from None

    def _set_sampling_time(self, sampling_s: float) -> None:
        match = [s for s in SAMPLING_S if math.isclose(s, sampling_s, rel_tol=1e-9)]
        if not match:
            raise InstrumentError(self.name, f"sampling time {sampling_s:g} s: the device takes 1, 2, 5 × 10^k ms "
                                             "from 1 ms to 1000 s")
        self.write_register(SAMPLING, encode_timer(match[0]), f"sampling time {sampling_s:g} s")

    def sampling_time(self) -> float:
        return decode_timer(self.read_registers(SAMPLING, 1)[SAMPLING])

    def _set_coincidence_window(self, window_ps: int) -> None:
        bits = self._timer_ns(window_ps / 1000, self.resolution_ns, WINDOW_MAX_NS, "coincidence window")
        self.write_register(WINDOW, bits, f"coincidence window {window_ps} ps")

    def coincidence_window(self) -> int:
        return int(round(decode_timer(self.read_registers(WINDOW, 1)[WINDOW]) * 1e12))

    def _set_delay(self, channel: int, delay_ps: int) -> None:
        bits = self._timer_ns(delay_ps / 1000, 0, DELAY_MAX_NS, f"delay of input {letter(channel)}")
        self.write_register(DELAY_BASE + channel - 1, bits, f"delay {delay_ps} ps on input {letter(channel)}")

    def delay(self, channel: int) -> int:
        reg = DELAY_BASE + channel - 1
        return int(round(decode_timer(self.read_registers(reg, 1)[reg]) * 1e12))

    # -- counts --------------------------------------------------------------------------------------------
    def read(self, wait_new: bool = True) -> CounterReading:
        """The latest completed sampling period; with ``wait_new`` one that started after this call (the
        period running now may have begun under earlier settings), which takes up to two sampling times."""
        self._require_open()
        sampling = self.sampling_time()
        first = self.read_registers(DATA_ID, 1)[DATA_ID]
        wanted = (first + 2) & 0xFFFFFFFF if wait_new else first
        for _ in range(8):
            status = self.read_registers(DATA_ID, 2)
            now = status[DATA_ID]
            if (now - wanted) & 0xFFFFFFFF < 1 << 31:  # now ≥ wanted, modulo the 32-bit wrap
                counts = self.read_registers(0, 28)
                if self.read_registers(DATA_ID, 1)[DATA_ID] == now:  # no new period while reading
                    return CounterReading({lab: counts.get(reg, 0) for lab, reg in COUNT_REGISTERS.items()},
                                          sampling, now)
                continue
            self.clock.sleep(max(status.get(TIME_LEFT, 0), 1) / 1000)
        raise InstrumentError(self.name, "no new counting period arrived (is the sampling time longer than the "
                                         "transport timeout?)")


# -- simulator ---------------------------------------------------------------------------------------------------
class AbacusSimulator(DeviceSimulator):
    """An AB1004 counting the simulated lab's clicks on its inputs A–D in consecutive sampling periods."""

    model_id = "abacus"
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
            else:
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


Abacus.simulator_class = AbacusSimulator
