"""Device-simulator base for Thorlabs APT motion controllers (K10CR1, MPC320): frames in, frames out."""

from __future__ import annotations

from typing import Any

from qlab.drivers.thorlabs.apt import (
    BIT_CONNECTED,
    BIT_ENABLED,
    BIT_HOMED,
    BIT_MOVING_CCW,
    BIT_MOVING_CW,
    DEVICE,
    HOST,
    HW_GET_INFO,
    HW_REQ_INFO,
    HW_RICHRESPONSE,
    HW_START_UPDATEMSGS,
    HW_STOP_UPDATEMSGS,
    MOD_GET_CHANENABLESTATE,
    MOD_IDENTIFY,
    MOD_REQ_CHANENABLESTATE,
    MOD_SET_CHANENABLESTATE,
    MOT_ACK_USTATUSUPDATE,
    MOT_GET_POSCOUNTER,
    MOT_GET_STATUSBITS,
    MOT_GET_USTATUSUPDATE,
    MOT_MOVE_ABSOLUTE,
    MOT_MOVE_COMPLETED,
    MOT_MOVE_HOME,
    MOT_MOVE_HOMED,
    MOT_MOVE_RELATIVE,
    MOT_MOVE_STOP,
    MOT_MOVE_STOPPED,
    MOT_REQ_POSCOUNTER,
    MOT_REQ_STATUSBITS,
    MOT_REQ_USTATUSUPDATE,
    ChannelPosition,
    Frame,
    HwInfo,
    HwResponse,
    StatusBits,
    StatusUpdate,
    decode_header,
)

from qlab.sim.device import DeviceSimulator


class AptSimulator(DeviceSimulator):
    """Frames in, frames out; channels move with a finite speed and report completion when done."""

    model_name = b""
    frame_end = b""  # binary, length-framed: garbage replaces whole frames
    hw_type = 0
    counts_per_deg = 1.0
    speed_deg_per_s = 10.0
    travel_deg: tuple[float, float] = (-1e9, 1e9)
    completed_has_status = True
    bitmask_channels = False

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
        self._send(HwResponse(msg_id, code, text.encode()[:64]).frame(HW_RICHRESPONSE))

    def _status(self, chan: int) -> StatusUpdate:
        return StatusUpdate(chan, self.pos[chan], 0, 0, self._bits(chan))

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
        # The optics follow the final position; the completion message arrives when the move ends.
        old = self.pos[chan]
        self.pos[chan] = target
        self._couple(chan)
        self.pos[chan] = old
        if completion == MOT_MOVE_HOMED or not self.completed_has_status:
            self._send(Frame(completion, p1=chan), duration)
        else:
            self._send(StatusUpdate(chan, target, 0, 0, BIT_CONNECTED | BIT_ENABLED).frame(completion), duration)

    def handle(self) -> None:
        buf = self.inbuf
        while len(buf) >= 6:
            msg_id, p1, p2, dest, src, n = decode_header(bytes(buf[:6]))
            if len(buf) < 6 + n:
                return
            data = bytes(buf[6:6 + n])
            del buf[:6 + n]
            if self.device_error_active:
                self._error(msg_id, 0x2B, "motor driver fault (simulated)")
                continue
            self._dispatch(msg_id, p1, p2, data)

    def _chan_of(self, msg_id: int, value: int) -> int | None:
        if value in self.axis_of:
            return value
        self._error(msg_id, 0x0A, f"no channel {value}")
        return None

    def _dispatch(self, msg_id: int, p1: int, p2: int, data: bytes) -> None:
        if msg_id == HW_REQ_INFO:
            info = HwInfo(self.serial, self.model_name, self.hw_type, bytes([4, 0, 1, 0]), b"qlab simulator",
                          1, 0, len(self.axis_of))
            self._send(info.frame(HW_GET_INFO))
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
                self._send(ChannelPosition(c, self.pos[c]).frame(MOT_GET_POSCOUNTER))
        elif msg_id == MOT_REQ_STATUSBITS:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self._send(StatusBits(c, self._bits(c)).frame(MOT_GET_STATUSBITS))
        elif msg_id == MOT_REQ_USTATUSUPDATE:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self._send(self._status(c).frame(MOT_GET_USTATUSUPDATE))
        elif msg_id in (MOT_MOVE_ABSOLUTE, MOT_MOVE_RELATIVE) and len(data) >= ChannelPosition.size():
            move = ChannelPosition.unpack(data)
            if (c := self._chan_of(msg_id, move.channel)) is not None:
                self._settle(c)
                target = move.position if msg_id == MOT_MOVE_ABSOLUTE else self.pos[c] + move.position
                self._start_move(c, target, MOT_MOVE_COMPLETED)
        elif msg_id == MOT_MOVE_HOME:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self.homed[c] = True
                self._start_move(c, 0, MOT_MOVE_HOMED)
        elif msg_id == MOT_MOVE_STOP:
            if (c := self._chan_of(msg_id, p1)) is not None:
                self._settle(c)
                self.move_end[c] = 0.0
                completed = MOT_MOVE_COMPLETED.to_bytes(2, "little")
                self._outbox = [(t, b) for t, b in self._outbox if b[:2] != completed]
                self._send(self._status(c).frame(MOT_MOVE_STOPPED))
        else:
            self._other(msg_id, p1, p2, data)

    def _other(self, msg_id: int, p1: int, p2: int, data: bytes) -> None:
        self._error(msg_id, 0x01, f"unknown message 0x{msg_id:04X}")
