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

from qlab.drivers.guard import parse_errors

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.polarization import PolarizationController
from qlab.types import Identification

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
        with parse_errors(self.name, f"axis {axis}: reply {kind}{data!r} to {cmd}"):
            return self._parse_position(axis, kind, data, cmd)

    def _parse_position(self, axis: str, kind: str, data: str, cmd: str) -> float:
        if kind == "GS":
            code = int(data, 16)
            raise InstrumentError(self.name, f"axis {axis}: {cmd} failed: status {code} "
                                             f"({STATUS.get(code, 'unknown')})")
        if kind != "PO":
            raise ProtocolError(self.name, f"axis {axis}: expected PO after {cmd}, got {kind}{data}")
        if len(data) != 8:
            raise ProtocolError(self.name, f"axis {axis}: position {data!r} after {cmd} is not 8 hex digits")
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
            with parse_errors(self.name, f"axis {axis}: identification {data!r}"):
                pulses = int(data[22:30], 16)
                self._info[axis] = {"serial": data[2:10], "year": data[10:14], "firmware": data[14:16],
                                    "hardware": data[16:18], "travel_deg": int(data[18:22], 16),
                                    "pulses_per_rev": pulses if pulses else PULSES_PER_REV}
            self.status_code(axis)  # clears a latched error from before we connected

    def identify(self) -> Identification:
        """Serial and firmware of each mount on the bus (one per axis), as read when opened."""
        info = self._info.values()
        return Identification("Thorlabs", "ELL14", serial=",".join(i["serial"] for i in info),
                              firmware=",".join(i["firmware"] for i in info),
                              details="; ".join(f"axis {ax} addr {self._address(ax)}" for ax in self._info))

    # -- operations -----------------------------------------------------------------------------------------
    def status_code(self, axis: str) -> int:
        """The mount's status code (0 ok, 9 busy, others errors: ``STATUS``); reading it clears a latched error.
        Raises ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        kind, data = self._exchange(axis, "gs")
        if kind != "GS":
            raise ProtocolError(self.name, f"axis {axis}: expected GS, got {kind}{data}")
        with parse_errors(self.name, f"axis {axis}: status {data!r}"):
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
