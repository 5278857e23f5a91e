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

from qlab.drivers.guard import RegisterMap

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.counter import CoincidenceUnit, CounterReading, letter
from qlab.types import Identification

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

    def identify(self) -> Identification:
        """The ``*IDN?`` reply, with the inputs and time resolution its model number implies."""
        return Identification("Tausand", self._idn.removeprefix("Tausand ").strip(), text=self._idn,
                              details=f"{self.n_inputs} inputs, {self.resolution_ns} ns resolution")

    def channels(self) -> list[int]:
        return list(range(1, self.n_inputs + 1))

    # -- registers -----------------------------------------------------------------------------------------
    def read_registers(self, address: int, count: int) -> dict[int, int]:
        """Read ``count`` 32-bit registers from ``address``: {address: value}. Raises ProtocolError on a malformed or
        corrupt reply (checksum), InstrumentTimeout if the device does not answer."""
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
        return RegisterMap(self.name, {data[i]: struct.unpack(">I", data[i + 1:i + 5])[0]
                                       for i in range(0, len(data), 5)})

    def write_register(self, address: int, data: int, what: str) -> None:
        """Write and read back; the device has no acknowledgement, so a value it refused shows up here.
        Raises InstrumentError if the value does not stick after retries, ProtocolError / InstrumentTimeout as
        ``read_registers``."""
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
        period running now may have begun under earlier settings), which takes up to two sampling times.
        Raises InstrumentError if not open or no new period arrives, ProtocolError on a corrupt reply,
        InstrumentTimeout if the device does not answer."""
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
