"""Thorlabs APT binary protocol (Kinesis devices over FTDI serial, 115200 8N1, RTS/CTS): codec, a driver
base for motion controllers, and a device-simulator base.

Frames: a 6-byte little-endian header. Short: <H id><B p1><B p2><B dest><B src>. Long (data follows):
<H id><H data_len><B dest|0x80><B src>. Host address 0x01, a standalone USB device 0x50.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.polarization import PolarizationController
from qlab.sim.device import DeviceSimulator

HOST, DEVICE = 0x01, 0x50
HW_REQ_INFO, HW_GET_INFO = 0x0005, 0x0006
HW_START_UPDATEMSGS, HW_STOP_UPDATEMSGS = 0x0011, 0x0012
HW_RESPONSE, HW_RICHRESPONSE = 0x0080, 0x0081
MOD_IDENTIFY = 0x0223
MOD_SET_CHANENABLESTATE, MOD_REQ_CHANENABLESTATE, MOD_GET_CHANENABLESTATE = 0x0210, 0x0211, 0x0212
MOT_SET_VELPARAMS, MOT_REQ_VELPARAMS, MOT_GET_VELPARAMS = 0x0413, 0x0414, 0x0415
MOT_REQ_POSCOUNTER, MOT_GET_POSCOUNTER = 0x0411, 0x0412
MOT_REQ_STATUSBITS, MOT_GET_STATUSBITS = 0x0429, 0x042A
MOT_MOVE_HOME, MOT_MOVE_HOMED = 0x0443, 0x0444
MOT_MOVE_RELATIVE, MOT_MOVE_ABSOLUTE, MOT_MOVE_COMPLETED = 0x0448, 0x0453, 0x0464
MOT_MOVE_STOP, MOT_MOVE_STOPPED = 0x0465, 0x0466
MOT_REQ_USTATUSUPDATE, MOT_GET_USTATUSUPDATE = 0x0490, 0x0491
MOT_ACK_USTATUSUPDATE = 0x0492
POL_SET_PARAMS, POL_REQ_PARAMS, POL_GET_PARAMS = 0x0530, 0x0531, 0x0532

BIT_MOVING_CW, BIT_MOVING_CCW = 0x10, 0x20
BIT_CONNECTED, BIT_HOMING, BIT_HOMED = 0x100, 0x200, 0x400
BIT_ENABLED = 0x80000000


@dataclass
class Frame:
    msg_id: int
    p1: int = 0
    p2: int = 0
    data: bytes = b""
    dest: int = DEVICE
    src: int = HOST

    def encode(self) -> bytes:
        if self.data:
            return struct.pack("<HHBB", self.msg_id, len(self.data), self.dest | 0x80, self.src) + self.data
        return struct.pack("<HBBBB", self.msg_id, self.p1, self.p2, self.dest, self.src)


def decode_header(head: bytes) -> tuple[int, int, int, int, int, int]:
    """(msg_id, p1, p2, dest, src, data_len) of a 6-byte header."""
    msg_id, p1, p2, dest, src = struct.unpack("<HBBBB", head)
    if dest & 0x80:
        return msg_id, 0, 0, dest & 0x7F, src, p1 | (p2 << 8)
    return msg_id, p1, p2, dest, src, 0


class AptController(PolarizationController):
    """Driver base: one APT device, axes mapped to channel identifiers (``address`` in the config)."""

    transport_kind = "serial"
    baudrate = 115200
    rtscts = True
    write_termination = b""
    read_termination = b""
    counts_per_deg = 1.0
    model_prefix = ""
    move_reply_timeout_s = 30.0

    def _chan(self, axis: str) -> int:
        addr = self.options.get("axes", {}).get(axis, {}).get("address")
        return 1 if addr is None else int(addr, 16) if isinstance(addr, str) else int(addr)

    def send(self, frame: Frame) -> None:
        self.transport.write(frame.encode())

    def receive(self, timeout_s: float | None = None) -> Frame:
        head = self.transport.read_exact(6, timeout_s)
        msg_id, p1, p2, dest, src, n = decode_header(head)
        data = self.transport.read_exact(n, timeout_s) if n else b""
        if msg_id in (HW_RESPONSE, HW_RICHRESPONSE):
            code = struct.unpack("<H", data[2:4])[0] if len(data) >= 4 else p1
            notes = data[4:68].split(b"\0")[0].decode("ascii", "replace") if len(data) > 4 else ""
            raise InstrumentError(self.name, f"device error {code}: {notes or 'no description'}")
        return Frame(msg_id, p1, p2, data, dest, src)

    def expect(self, msg_id: int, timeout_s: float | None = None) -> Frame:
        """Read until ``msg_id`` arrives (status updates the device pushes meanwhile are skipped)."""
        while True:
            f = self.receive(timeout_s)
            if f.msg_id == msg_id:
                return f
            if f.msg_id not in (MOT_GET_USTATUSUPDATE, MOT_GET_STATUSBITS, MOT_MOVE_COMPLETED, MOT_MOVE_STOPPED):
                raise ProtocolError(self.name, f"expected message 0x{msg_id:04X}, got 0x{f.msg_id:04X}")

    def _check_pending(self) -> None:
        """Look at what arrived unasked: stale replies are dropped, an error the device reported for an
        earlier command without reply (a SET) is raised here."""
        data = self.transport.drain()
        while len(data) >= 6:
            msg_id, p1, _, _, _, n = decode_header(data[:6])
            body, data = data[6:6 + n], data[6 + n:]
            if msg_id in (HW_RESPONSE, HW_RICHRESPONSE):
                code = struct.unpack("<H", body[2:4])[0] if len(body) >= 4 else p1
                notes = body[4:68].split(b"\0")[0].decode("ascii", "replace") if len(body) > 4 else ""
                raise InstrumentError(self.name, f"device error {code}: {notes or 'no description'}")

    def query(self, frame: Frame, reply_id: int, timeout_s: float | None = None) -> Frame:
        with self.transport.lock:
            self._check_pending()
            self.send(frame)
            return self.expect(reply_id, timeout_s)

    def _open(self) -> None:
        info = self.query(Frame(HW_REQ_INFO), HW_GET_INFO)
        if len(info.data) < 84:
            raise ProtocolError(self.name, f"short HW_GET_INFO ({len(info.data)} bytes)")
        serial, model = struct.unpack("<i8s", info.data[:12])
        self._model = model.split(b"\0")[0].decode("ascii", "replace")
        self._serial = serial
        fw = info.data[14:18]
        self._firmware = f"{fw[2]}.{fw[1]}.{fw[0]}"
        if self.model_prefix and not self._model.startswith(self.model_prefix):
            raise ProtocolError(self.name, f"device reports model {self._model!r}, not a {self.model_prefix}")
        self._configure()

    def _configure(self) -> None:  # noqa: B027 - models add their setup
        pass

    def identify(self) -> str:
        return f"Thorlabs {self._model} serial {self._serial} firmware {self._firmware}"

    def _counts(self, deg: float) -> int:
        return int(round(deg * self.counts_per_deg))

    def _move_absolute(self, axis: str, position_deg: float) -> None:
        with self.transport.lock:
            self.send(Frame(MOT_MOVE_ABSOLUTE, data=struct.pack("<Hi", self._chan(axis), self._counts(position_deg))))
            self.expect(MOT_MOVE_COMPLETED, self.move_reply_timeout_s)

    def _move_relative(self, axis: str, delta_deg: float) -> None:
        with self.transport.lock:
            self.send(Frame(MOT_MOVE_RELATIVE, data=struct.pack("<Hi", self._chan(axis), self._counts(delta_deg))))
            self.expect(MOT_MOVE_COMPLETED, self.move_reply_timeout_s)

    def _home(self, axis: str) -> None:
        with self.transport.lock:
            self.send(Frame(MOT_MOVE_HOME, p1=self._chan(axis)))
            self.expect(MOT_MOVE_HOMED, self.move_reply_timeout_s)

    def position(self, axis: str | None = None) -> float:
        ax = self._axis(axis)
        f = self.query(Frame(MOT_REQ_POSCOUNTER, p1=self._chan(ax)), MOT_GET_POSCOUNTER)
        return struct.unpack("<Hi", f.data[:6])[1] / self.counts_per_deg

    def status_bits(self, axis: str | None = None) -> int:
        ax = self._axis(axis)
        f = self.query(Frame(MOT_REQ_STATUSBITS, p1=self._chan(ax)), MOT_GET_STATUSBITS)
        return struct.unpack("<HI", f.data[:6])[1]

    def is_busy(self, axis: str | None = None) -> bool:
        return bool(self.status_bits(axis) & (BIT_MOVING_CW | BIT_MOVING_CCW | BIT_HOMING))

    def status(self) -> dict[str, Any]:
        return {**super().status(), "status_bits": {ax: hex(self.status_bits(ax)) for ax in self.axes()}}


# ==== simulator ================================================================================================

class AptSimulator(DeviceSimulator):
    """Frames in, frames out; channels move with a finite speed and report completion when done."""

    model_name = b""
    hw_type = 0
    counts_per_deg = 1.0
    speed_deg_per_s = 10.0
    travel_deg: tuple[float, float] = (-1e9, 1e9)
    completed_has_status = True

    def __init__(self, lab: Any = None, name: str = "", options: dict | None = None):
        super().__init__(lab, name, options)
        axes = self.options.get("axes") or {"1": {"address": 1}}
        self.axis_of: dict[int, str] = {}
        for i, (ax, spec) in enumerate(axes.items()):
            addr = spec.get("address")
            chan = (1 << i if self.bitmask_channels else i + 1) if addr is None else (
                int(addr, 16) if isinstance(addr, str) else int(addr))
            self.axis_of[chan] = ax
        self.pos = {c: 0 for c in self.axis_of}
        self.target = dict(self.pos)
        self.move_end = {c: 0.0 for c in self.axis_of}
        self.enabled = {c: True for c in self.axis_of}
        self.homed = {c: False for c in self.axis_of}
        self.serial = 55000123
        for c in self.axis_of:
            self._couple(c)

    bitmask_channels = False

    def _couple(self, chan: int) -> None:
        if self.lab is not None:
            self.lab.set_waveplate(self.name, self.axis_of[chan], self.pos[chan] / self.counts_per_deg)

    def _settle(self, chan: int) -> None:
        if self.move_end[chan] and self.clock.now() >= self.move_end[chan]:
            self.pos[chan] = self.target[chan]
            self.move_end[chan] = 0.0

    def _bits(self, chan: int) -> int:
        self._settle(chan)
        bits = BIT_CONNECTED | (BIT_ENABLED if self.enabled[chan] else 0) | (BIT_HOMED if self.homed[chan] else 0)
        if self.move_end[chan]:
            bits |= BIT_MOVING_CW if self.target[chan] >= self.pos[chan] else BIT_MOVING_CCW
        return bits

    def _send(self, frame: Frame, delay_s: float = 0.0) -> None:
        frame.dest, frame.src = HOST, DEVICE
        self.reply(frame.encode(), delay_s)

    def _error(self, msg_id: int, code: int, text: str) -> None:
        self._send(Frame(HW_RICHRESPONSE, data=struct.pack("<HH64s", msg_id, code, text.encode()[:64])))

    def _status_data(self, chan: int) -> bytes:
        return struct.pack("<HihHI", chan, self.pos[chan], 0, 0, self._bits(chan))

    def _start_move(self, chan: int, target: int, completion: int) -> None:
        self._settle(chan)
        lo, hi = (int(round(x * self.counts_per_deg)) for x in self.travel_deg)
        if not lo <= target <= hi:
            self._error(MOT_MOVE_ABSOLUTE, 0x0B, f"position outside travel {self.travel_deg}")
            return
        if not self.enabled[chan]:
            self._error(MOT_MOVE_ABSOLUTE, 0x0C, "channel disabled")
            return
        duration = 0.02 + abs(target - self.pos[chan]) / self.counts_per_deg / self.speed_deg_per_s
        self.target[chan] = target
        self.move_end[chan] = self.clock.now() + duration
        old = self.pos[chan]
        self.pos[chan] = target
        self._couple(chan)
        self.pos[chan] = old
        if completion == MOT_MOVE_HOMED or not self.completed_has_status:
            self._send(Frame(completion, p1=chan), duration)
        else:
            data = struct.pack("<HihHI", chan, target, 0, 0, BIT_CONNECTED | BIT_ENABLED)
            self._send(Frame(completion, data=data), duration)

    def handle(self) -> None:
        buf = self.inbuf
        while len(buf) >= 6:
            msg_id, p1, p2, dest, src, n = decode_header(bytes(buf[:6]))
            if len(buf) < 6 + n:
                return
            data = bytes(buf[6:6 + n])
            del buf[:6 + n]
            self._dispatch(msg_id, p1, p2, data)

    def _chan_of(self, msg_id: int, value: int) -> int | None:
        if value in self.axis_of:
            return value
        self._error(msg_id, 0x0A, f"no channel {value}")
        return None

    def _dispatch(self, msg_id: int, p1: int, p2: int, data: bytes) -> None:
        if msg_id == HW_REQ_INFO:
            info = struct.pack("<i8sH4s60sHHH", self.serial, self.model_name, self.hw_type, bytes([4, 0, 1, 0]),
                               b"qlab simulator", 1, 0, len(self.axis_of))
            self._send(Frame(HW_GET_INFO, data=info))
        elif msg_id in (MOD_IDENTIFY, HW_START_UPDATEMSGS, HW_STOP_UPDATEMSGS, MOT_ACK_USTATUSUPDATE):
            pass
        elif msg_id == MOD_SET_CHANENABLESTATE:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self.enabled[c] = p2 == 1
        elif msg_id == MOD_REQ_CHANENABLESTATE:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self._send(Frame(MOD_GET_CHANENABLESTATE, p1=c, p2=1 if self.enabled[c] else 2))
        elif msg_id == MOT_REQ_POSCOUNTER:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self._settle(c)
                self._send(Frame(MOT_GET_POSCOUNTER, data=struct.pack("<Hi", c, self.pos[c])))
        elif msg_id == MOT_REQ_STATUSBITS:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self._send(Frame(MOT_GET_STATUSBITS, data=struct.pack("<HI", c, self._bits(c))))
        elif msg_id == MOT_REQ_USTATUSUPDATE:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self._send(Frame(MOT_GET_USTATUSUPDATE, data=self._status_data(c)))
        elif msg_id in (MOT_MOVE_ABSOLUTE, MOT_MOVE_RELATIVE) and len(data) >= 6:
            chan, value = struct.unpack("<Hi", data[:6])
            if (c := self._chan_of(msg_id, chan)) is not None:
                self._settle(c)
                target = value if msg_id == MOT_MOVE_ABSOLUTE else self.pos[c] + value
                self._start_move(c, target, MOT_MOVE_COMPLETED)
        elif msg_id == MOT_MOVE_HOME:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self.homed[c] = True
                self._start_move(c, 0, MOT_MOVE_HOMED)
        elif msg_id == MOT_MOVE_STOP:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self._settle(c)
                self.move_end[c] = 0.0
                self._outbox = [(t, b) for t, b in self._outbox if b[:2] != struct.pack("<H", MOT_MOVE_COMPLETED)]
                self._send(Frame(MOT_MOVE_STOPPED, data=self._status_data(c)))
        else:
            self._other(msg_id, p1, p2, data)

    def _other(self, msg_id: int, p1: int, p2: int, data: bytes) -> None:
        self._error(msg_id, 0x01, f"unknown message 0x{msg_id:04X}")
