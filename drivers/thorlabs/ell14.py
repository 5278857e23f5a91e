"""Thorlabs Elliptec ELL14 rotation mount: driver and protocol-faithful simulator.

Wire protocol (serial 9600 8N1, shared/reference/protocols.md): host sends ``<addr><cmd><data>`` with no
terminator; the device answers ``<addr><CMD><data>\\r\\n``. Positions are 32-bit two's-complement hex
pulses (143360 per revolution). Up to 16 mounts share one bus; each configured axis is one address.

Config block (instruments.yaml)::

    alice_analyzer:
      driver: thorlabs.ell14
      backend: /dev/ttyUSB0          # or sim
      axes: {hwp: {address: 0, plate: half}}
      optics: {party: alice, stage: analyzer}
      limits: {position_deg: {min: -360, max: 720}}
"""

from __future__ import annotations

from typing import Any

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.polarization import PolarizationController
from qlab.sim.device import DeviceSimulator

PULSES_PER_REV = 0x23000  # 143360
STATUS = {0: "ok", 1: "communication timeout", 2: "mechanical timeout", 3: "command error or not supported",
          4: "value out of range", 5: "module isolated", 6: "module out of isolation", 7: "initializing error",
          8: "thermal error", 9: "busy", 10: "sensor error", 11: "motor error", 12: "out of range",
          13: "over current error"}


def to_hex32(v: int) -> str:
    return f"{v & 0xFFFFFFFF:08X}"


def from_hex32(s: str) -> int:
    v = int(s, 16)
    return v - (1 << 32) if v & 0x80000000 else v


class ELL14(PolarizationController):
    model = "Thorlabs ELL14"
    transport_kind = "serial"
    baudrate = 9600
    write_termination = b""
    read_termination = b"\r\n"
    move_reply_timeout_s = 10.0

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self._info: dict[str, dict[str, Any]] = {}

    # -- protocol helpers --------------------------------------------------------------------------------
    def _address(self, axis: str) -> str:
        addr = self.options.get("axes", {}).get(axis, {}).get("address", 0)
        return f"{int(addr, 16) if isinstance(addr, str) else int(addr):X}"

    def _exchange(self, axis: str, cmd: str, timeout_s: float | None = None) -> tuple[str, str]:
        """Send one command and return (reply type, data), skipping unsolicited BO/BS lines."""
        addr = self._address(axis)
        with self.transport.lock:
            self.transport.write(f"{addr}{cmd}".encode("ascii"))
            while True:
                line = self.transport.read_until(b"\r\n", timeout_s).decode("ascii", "replace").strip()
                if len(line) < 3 or line[0] != addr:
                    raise ProtocolError(self.name, f"axis {axis}: unexpected reply {line!r} to {addr}{cmd}")
                kind, data = line[1:3], line[3:]
                if kind in ("BO", "BS"):
                    continue
                return kind, data

    def _expect_position(self, axis: str, kind: str, data: str, cmd: str) -> float:
        if kind == "GS":
            code = int(data, 16)
            raise InstrumentError(self.name, f"axis {axis}: {cmd} failed: status {code} "
                                             f"({STATUS.get(code, 'unknown')})")
        if kind != "PO":
            raise ProtocolError(self.name, f"axis {axis}: expected PO after {cmd}, got {kind}{data}")
        return from_hex32(data) * 360.0 / self._pulses(axis)

    def _pulses(self, axis: str) -> int:
        return self._info.get(axis, {}).get("pulses_per_rev", PULSES_PER_REV)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def _open(self) -> None:
        for axis in self.axes():
            kind, data = self._exchange(axis, "in")
            if kind != "IN" or len(data) < 30:
                raise ProtocolError(self.name, f"axis {axis}: bad identification {kind}{data!r}")
            if data[0:2] != "0E":
                raise ProtocolError(self.name, f"axis {axis}: device type {data[0:2]} is not an ELL14 (0E)")
            pulses = int(data[22:30], 16)
            self._info[axis] = {"serial": data[2:10], "year": data[10:14], "firmware": data[14:16],
                                "hardware": data[16:18], "travel_deg": int(data[18:22], 16),
                                "pulses_per_rev": pulses if pulses else PULSES_PER_REV}
            self.status_code(axis)  # clears a latched error from before we connected

    def identify(self) -> str:
        return "; ".join(f"Thorlabs ELL14 axis {ax} addr {self._address(ax)} serial {i['serial']} "
                         f"fw {i['firmware']}" for ax, i in self._info.items())

    # -- operations -----------------------------------------------------------------------------------------
    def status_code(self, axis: str) -> int:
        kind, data = self._exchange(axis, "gs")
        if kind != "GS":
            raise ProtocolError(self.name, f"axis {axis}: expected GS, got {kind}{data}")
        return int(data, 16)

    def _move_absolute(self, axis: str, position_deg: float) -> None:
        pulses = round(position_deg * self._pulses(axis) / 360.0)
        kind, data = self._exchange(axis, f"ma{to_hex32(pulses)}", self.move_reply_timeout_s)
        self._expect_position(axis, kind, data, "move absolute")

    def _move_relative(self, axis: str, delta_deg: float) -> None:
        pulses = round(delta_deg * self._pulses(axis) / 360.0)
        kind, data = self._exchange(axis, f"mr{to_hex32(pulses)}", self.move_reply_timeout_s)
        self._expect_position(axis, kind, data, "move relative")

    def _home(self, axis: str) -> None:
        kind, data = self._exchange(axis, "ho0", self.move_reply_timeout_s)
        self._expect_position(axis, kind, data, "home")

    def position(self, axis: str | None = None) -> float:
        ax = self._axis(axis)
        kind, data = self._exchange(ax, "gp")
        return self._expect_position(ax, kind, data, "get position")

    def is_busy(self, axis: str | None = None) -> bool:
        code = self.status_code(self._axis(axis))
        if code not in (0, 9):
            raise InstrumentError(self.name, f"axis {axis}: status {code} ({STATUS.get(code, 'unknown')})")
        return code == 9

    def status(self) -> dict[str, Any]:
        return {**super().status(), "axes": {ax: STATUS.get(self.status_code(ax), "?") for ax in self.axes()}}


# ==== simulator ================================================================================================

class _Mount:
    def __init__(self, serial: str):
        self.serial = serial
        self.pulses = 0
        self.target = 0
        self.move_start = 0.0
        self.move_end = 0.0
        self.from_pulses = 0
        self.error = 0
        self.velocity = 100
        self.jog = 0x00000B33  # ~ 1 deg... vendor default jog step, in pulses
        self.home_offset = 0


class ELL14Simulator(DeviceSimulator):
    """An Elliptec bus with one ELL14 per configured axis; positions drive waveplates in the SimLab."""

    model_id = "ell14"
    speed_deg_per_s = 430.0  # full speed (100 %) rotation

    def __init__(self, lab: Any = None, name: str = "", options: dict | None = None):
        super().__init__(lab, name, options)
        axes = self.options.get("axes") or {"0": {"address": 0}}
        self.mounts: dict[str, _Mount] = {}
        self.axis_of: dict[str, str] = {}
        for i, (ax, spec) in enumerate(axes.items()):
            addr = spec.get("address", i)
            addr = f"{int(addr, 16) if isinstance(addr, str) else int(addr):X}"
            self.mounts[addr] = _Mount(f"1140{0x500 + i:04X}")
            self.axis_of[addr] = ax
        for addr in self.mounts:
            self._couple(addr)

    def _deg(self, m: _Mount) -> float:
        return m.pulses * 360.0 / PULSES_PER_REV

    def _couple(self, addr: str) -> None:
        if self.lab is not None:
            self.lab.set_waveplate(self.name, self.axis_of[addr], self._deg(self.mounts[addr]))

    def _settle(self, m: _Mount) -> None:
        if m.move_end and self.clock.now() >= m.move_end:
            m.pulses = m.target
            m.move_end = 0.0

    def _busy(self, m: _Mount) -> bool:
        self._settle(m)
        return bool(m.move_end)

    def _start_move(self, addr: str, target: int) -> None:
        m = self.mounts[addr]
        if self._busy(m):
            # Quirk of the real device: a move sent while moving is ignored (reported as busy).
            self.reply(f"{addr}GS09\r\n".encode())
            return
        speed = self.speed_deg_per_s * max(m.velocity, 10) / 100.0
        duration = 0.05 + abs(target - m.pulses) * 360.0 / PULSES_PER_REV / speed
        m.from_pulses, m.target = m.pulses, target
        m.move_start, m.move_end = self.clock.now(), self.clock.now() + duration
        # The optics follow the final position; the reply arrives when the move completes.
        m.pulses = target
        self._couple(addr)
        m.pulses = m.from_pulses
        self.reply(f"{addr}PO{to_hex32(target)}\r\n".encode(), duration)

    def handle(self) -> None:
        buf = self.inbuf
        while len(buf) >= 3:
            addr, cmd = chr(buf[0]).upper(), bytes(buf[1:3]).decode("ascii", "replace")
            need = {"ma": 8, "mr": 8, "sj": 8, "so": 8, "sv": 2, "ho": 1, "ca": 1}.get(cmd, 0)
            if len(buf) < 3 + need:
                return
            data = bytes(buf[3:3 + need]).decode("ascii", "replace")
            del buf[:3 + need]
            m = self.mounts.get(addr)
            if m is None:
                continue  # no device at that address: silence, as on a real bus
            self._command(addr, m, cmd, data)

    def _command(self, addr: str, m: _Mount, cmd: str, data: str) -> None:
        ok = f"{addr}GS00\r\n".encode()
        try:
            if cmd == "in":
                self.reply(f"{addr}IN0E{m.serial}20231701{360:04X}{PULSES_PER_REV:08X}\r\n".encode())
            elif cmd == "gs":
                code = 9 if self._busy(m) else m.error
                m.error = 0
                self.reply(f"{addr}GS{code:02X}\r\n".encode())
            elif cmd == "gp":
                self._settle(m)
                pos = m.pulses
                if m.move_end:
                    frac = (self.clock.now() - m.move_start) / (m.move_end - m.move_start)
                    pos = round(m.from_pulses + frac * (m.target - m.from_pulses))
                self.reply(f"{addr}PO{to_hex32(pos)}\r\n".encode())
            elif cmd == "ma":
                self._start_move(addr, from_hex32(data))
            elif cmd == "mr":
                self._settle(m)
                self._start_move(addr, m.pulses + from_hex32(data))
            elif cmd == "ho":
                if data not in "01":
                    raise ValueError(data)
                self._settle(m)
                self._start_move(addr, m.home_offset)
            elif cmd in ("fw", "bw"):
                self._settle(m)
                self._start_move(addr, m.pulses + (m.jog if cmd == "fw" else -m.jog))
            elif cmd == "gv":
                self.reply(f"{addr}GV{m.velocity:02X}\r\n".encode())
            elif cmd == "sv":
                v = int(data, 16)
                if not 0 < v <= 100:
                    m.error = 4
                    self.reply(f"{addr}GS04\r\n".encode())
                    return
                m.velocity = v
                self.reply(ok)
            elif cmd == "gj":
                self.reply(f"{addr}GJ{to_hex32(m.jog)}\r\n".encode())
            elif cmd == "sj":
                m.jog = from_hex32(data)
                self.reply(ok)
            elif cmd == "go":
                self.reply(f"{addr}HO{to_hex32(m.home_offset)}\r\n".encode())
            elif cmd == "so":
                m.home_offset = from_hex32(data)
                self.reply(ok)
            elif cmd == "ca":
                new = data.upper()
                int(new, 16)
                self.mounts[new] = self.mounts.pop(addr)
                self.axis_of[new] = self.axis_of.pop(addr)
                self.reply(f"{new}GS00\r\n".encode())
            elif cmd == "us":
                self.reply(ok)
            else:
                m.error = 3
                self.reply(f"{addr}GS03\r\n".encode())
                self.inbuf.clear()  # the device drops the rest of a command it does not know
        except ValueError:
            m.error = 4
            self.reply(f"{addr}GS04\r\n".encode())

    # -- test hooks ------------------------------------------------------------------------------------------
    def position_deg(self, axis_address: str = "0") -> float:
        m = self.mounts[axis_address]
        self._settle(m)
        return self._deg(m)


ELL14.simulator_class = ELL14Simulator
