"""Thorlabs APT binary protocol (Kinesis devices over FTDI serial, 115200 8N1, RTS/CTS): frames, the named
data structures of the messages qlab uses, and a driver base for motion controllers.

Frames: a 6-byte little-endian header. Short: <H id><B p1><B p2><B dest><B src>. Long (data follows):
<H id><H data_len><B dest|0x80><B src>. Host address 0x01, a standalone USB device 0x50.

The data blocks of long messages are dataclasses with ``pack()`` / ``unpack(data)`` (the idea of QMI's
``apt_packets.py``); the drivers and their simulators (``apt_sim.py``) share them.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.polarization import PolarizationController
from qlab.types import Identification

HOST, DEVICE = 0x01, 0x50
MAX_DATA_BYTES = 255  # the longest data block qlab reads (HW_GET_INFO) is 84 bytes; more means a corrupt header
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


# ==== message data structures ==================================================================================

D = TypeVar("D", bound="AptData")


class AptData:
    """The data block of a long APT message: dataclass fields packed little-endian as ``FORMAT``."""

    FORMAT: ClassVar[str] = ""

    @classmethod
    def size(cls) -> int:
        """Bytes of the packed block."""
        return struct.calcsize(cls.FORMAT)

    def pack(self) -> bytes:
        return struct.pack(self.FORMAT, *(getattr(self, f.name) for f in dataclasses.fields(self)))  # type: ignore[arg-type]

    @classmethod
    def unpack(cls: type[D], data: bytes) -> D:
        """Decode the first ``size()`` bytes of ``data``; ValueError if it is shorter."""
        if len(data) < cls.size():
            raise ValueError(f"{cls.__name__} needs {cls.size()} data bytes, got {len(data)}")
        return cls(*struct.unpack(cls.FORMAT, data[:cls.size()]))

    def frame(self, msg_id: int) -> Frame:
        """A long frame carrying this block."""
        return Frame(msg_id, data=self.pack())


@dataclass
class HwInfo(AptData):
    """HW_GET_INFO: who the device is. ``firmware`` bytes are (minor, interim, major, unused)."""

    FORMAT: ClassVar[str] = "<i8sH4s60sHHH"
    serial: int
    model: bytes
    hw_type: int
    firmware: bytes
    notes: bytes
    hw_version: int
    mod_state: int
    n_channels: int

    @property
    def model_name(self) -> str:
        return self.model.split(b"\0")[0].decode("ascii", "replace")

    @property
    def firmware_version(self) -> str:
        """``major.interim.minor``."""
        return f"{self.firmware[2]}.{self.firmware[1]}.{self.firmware[0]}"


@dataclass
class HwResponse(AptData):
    """HW_RESPONSE / HW_RICHRESPONSE: an error the device reports for message ``msg_id``."""

    FORMAT: ClassVar[str] = "<HH64s"
    msg_id: int
    code: int
    notes: bytes

    @property
    def text(self) -> str:
        return self.notes.split(b"\0")[0].decode("ascii", "replace")


@dataclass
class ChannelPosition(AptData):
    """MOT_GET_POSCOUNTER, and MOT_MOVE_ABSOLUTE / MOT_MOVE_RELATIVE: a channel and a position or distance
    in encoder counts."""

    FORMAT: ClassVar[str] = "<Hi"
    channel: int
    position: int


@dataclass
class StatusBits(AptData):
    """MOT_GET_STATUSBITS: a channel's status bit field (BIT_*)."""

    FORMAT: ClassVar[str] = "<HI"
    channel: int
    bits: int


@dataclass
class StatusUpdate(AptData):
    """MOT_GET_USTATUSUPDATE, and the long forms of MOT_MOVE_COMPLETED / MOT_MOVE_STOPPED."""

    FORMAT: ClassVar[str] = "<HihHI"
    channel: int
    position: int
    velocity: int
    motor_current: int
    bits: int


@dataclass
class VelocityParams(AptData):
    """MOT_SET_VELPARAMS / MOT_GET_VELPARAMS, in device units (model-specific scale)."""

    FORMAT: ClassVar[str] = "<Hiii"
    channel: int
    min_velocity: int
    acceleration: int
    max_velocity: int


@dataclass
class PolParams(AptData):
    """POL_SET_PARAMS / POL_GET_PARAMS of the MPC paddles: velocity in % of 400 °/s, home and jog steps."""

    FORMAT: ClassVar[str] = "<HHHHHH"
    unused: int
    velocity_percent: int
    home_position: int
    jog_step1: int
    jog_step2: int
    jog_step3: int


def device_error(name: str, p1: int, data: bytes) -> InstrumentError:
    """The InstrumentError for an HW_RESPONSE / HW_RICHRESPONSE frame (short frames carry the code in p1)."""
    if len(data) >= HwResponse.size():
        r = HwResponse.unpack(data)
        return InstrumentError(name, f"device error {r.code}: {r.text or 'no description'}")
    code = struct.unpack("<H", data[2:4])[0] if len(data) >= 4 else p1
    return InstrumentError(name, f"device error {code}: no description")


# ==== driver ===================================================================================================

class AptController(PolarizationController):
    """Driver base: one APT device, axes mapped to channel identifiers (``address`` in the config).

    Positions are degrees (``counts_per_deg`` encoder counts each). Device error frames raise
    InstrumentError, malformed or unexpected frames ProtocolError, a silent device InstrumentTimeout.
    """

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
        """Write one frame (no reply is read)."""
        self.transport.write(frame.encode())

    def receive(self, timeout_s: float | None = None) -> Frame:
        """Read one frame. Raises InstrumentError for a device error frame, InstrumentTimeout if none comes
        within ``timeout_s`` seconds (the transport's default when None)."""
        head = self.transport.read_exact(6, timeout_s)
        msg_id, p1, p2, dest, src, n = decode_header(head)
        if n > MAX_DATA_BYTES or dest not in (HOST, 0) or src < DEVICE:
            self.transport.drain()  # resynchronise on the next exchange
            raise ProtocolError(self.name, f"corrupt frame header {head.hex()} (message 0x{msg_id:04X}, "
                                           f"{n} data bytes, dest 0x{dest:02X}, src 0x{src:02X})")
        data = self.transport.read_exact(n, timeout_s) if n else b""
        if msg_id in (HW_RESPONSE, HW_RICHRESPONSE):
            raise device_error(self.name, p1, data)
        return Frame(msg_id, p1, p2, data, dest, src)

    def expect(self, msg_id: int, timeout_s: float | None = None) -> Frame:
        """Read until ``msg_id`` arrives (status updates the device pushes meanwhile are skipped).
        Raises ProtocolError for any other message, InstrumentError / InstrumentTimeout as ``receive``."""
        while True:
            f = self.receive(timeout_s)
            if f.msg_id == msg_id:
                return f
            if f.msg_id not in (MOT_GET_USTATUSUPDATE, MOT_GET_STATUSBITS, MOT_MOVE_COMPLETED, MOT_MOVE_STOPPED):
                raise ProtocolError(self.name, f"expected message 0x{msg_id:04X}, got 0x{f.msg_id:04X}")

    def decode(self, cls: type[D], frame: Frame) -> D:
        """The data block of ``frame`` as ``cls``; ProtocolError if it is too short."""
        try:
            return cls.unpack(frame.data)
        except ValueError as exc:
            raise ProtocolError(self.name, f"message 0x{frame.msg_id:04X}: {exc}") from None

    def _check_pending(self) -> None:
        """Look at what arrived unasked: stale replies are dropped, an error the device reported for an
        earlier command without reply (a SET) is raised here as InstrumentError."""
        data = self.transport.drain()
        while len(data) >= 6:
            msg_id, p1, _, _, _, n = decode_header(data[:6])
            if n > MAX_DATA_BYTES:
                return  # a corrupt frame: nothing reliable follows
            body, data = data[6:6 + n], data[6 + n:]
            if msg_id in (HW_RESPONSE, HW_RICHRESPONSE):
                raise device_error(self.name, p1, body)

    def query(self, frame: Frame, reply_id: int, timeout_s: float | None = None) -> Frame:
        """Send ``frame`` and return the reply ``reply_id``; errors as ``expect``."""
        with self.transport.lock:
            self._check_pending()
            self.send(frame)
            return self.expect(reply_id, timeout_s)

    def _open(self) -> None:
        reply = self.query(Frame(HW_REQ_INFO), HW_GET_INFO)
        if len(reply.data) < 84:
            raise ProtocolError(self.name, f"short HW_GET_INFO ({len(reply.data)} bytes)")
        info = self.decode(HwInfo, reply)
        self._model = info.model_name
        self._serial = info.serial
        self._firmware = info.firmware_version
        if self.model_prefix and not self._model.startswith(self.model_prefix):
            raise ProtocolError(self.name, f"device reports model {self._model!r}, not a {self.model_prefix}")
        self._configure()

    def _configure(self) -> None:  # noqa: B027 - models add their setup
        pass

    def identify(self) -> Identification:
        """Model, serial and firmware from HW_GET_INFO (read when the device was opened)."""
        return Identification("Thorlabs", self._model, str(self._serial), self._firmware)

    def _counts(self, deg: float) -> int:
        return int(round(deg * self.counts_per_deg))

    def _move(self, msg_id: int, axis: str, deg: float) -> None:
        with self.transport.lock:
            self.send(ChannelPosition(self._chan(axis), self._counts(deg)).frame(msg_id))
            self.expect(MOT_MOVE_COMPLETED, self.move_reply_timeout_s)

    def _move_absolute(self, axis: str, position_deg: float) -> None:
        self._move(MOT_MOVE_ABSOLUTE, axis, position_deg)

    def _move_relative(self, axis: str, delta_deg: float) -> None:
        self._move(MOT_MOVE_RELATIVE, axis, delta_deg)

    def _home(self, axis: str) -> None:
        with self.transport.lock:
            self.send(Frame(MOT_MOVE_HOME, p1=self._chan(axis)))
            self.expect(MOT_MOVE_HOMED, self.move_reply_timeout_s)

    def position(self, axis: str | None = None) -> float:
        """Position of ``axis`` in degrees from the encoder counter. Raises InstrumentError (device error,
        unknown axis), ProtocolError, InstrumentTimeout."""
        ax = self._axis(axis)
        f = self.query(Frame(MOT_REQ_POSCOUNTER, p1=self._chan(ax)), MOT_GET_POSCOUNTER)
        return self.decode(ChannelPosition, f).position / self.counts_per_deg

    def status_bits(self, axis: str | None = None) -> int:
        """The channel's APT status bit field (BIT_* constants). Errors as ``position``."""
        ax = self._axis(axis)
        f = self.query(Frame(MOT_REQ_STATUSBITS, p1=self._chan(ax)), MOT_GET_STATUSBITS)
        return self.decode(StatusBits, f).bits

    def is_busy(self, axis: str | None = None) -> bool:
        """True while the axis moves or homes. Errors as ``position``."""
        return bool(self.status_bits(axis) & (BIT_MOVING_CW | BIT_MOVING_CCW | BIT_HOMING))

    def status(self) -> dict[str, Any]:
        """Base status plus each axis's status bits (hex). Errors as ``position``."""
        return {**super().status(), "status_bits": {ax: hex(self.status_bits(ax)) for ax in self.axes()}}
