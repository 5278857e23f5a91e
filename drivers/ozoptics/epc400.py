"""OZ Optics EPC-400 / EPC04 electronic polarization controller: driver and simulator.

Serial 9600 8N1 (also reachable as a pyvisa ASRL resource). Commands end CR LF; the device may echo the
command, answers with one or more lines and then ``Done``, or with ``Error!``. Each of the four channels
is a fibre squeezer: a retarder at a fixed axis whose retardance grows with the drive voltage
(-5000…+5000 mV). qlab exposes a channel's position as retardance in degrees, ``deg_per_volt`` apart.

Config block::

    bob_compensator:
      driver: ozoptics.epc400
      backend: /dev/ttyUSB1      # or sim
      axes: {ch1: {address: 1, plate: paddle, zero_deg: 0}, ch2: {address: 2, plate: paddle, zero_deg: 45},
             ch3: {address: 3, plate: paddle, zero_deg: 0}}
      optics: {party: bob, stage: compensator}
      limits: {position_deg: {min: -360, max: 360}}
"""

from __future__ import annotations

import re
from typing import Any

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.polarization import PolarizationController
from qlab.types import Identification

DEG_PER_VOLT = 72.0  # ±5 V spans ±360° of retardance (order of magnitude of real squeezers)
VOLT_RE = re.compile(r"CH(\d)\s*([+-]?\d{1,6})")
MAX_REPLY_LINES = 16  # the longest reply qlab asks for has two lines before Done


class EPC400(PolarizationController):
    model = "OZ Optics EPC-400"
    transport_kind = "serial"
    baudrate = 9600
    write_termination = b"\r\n"
    read_termination = b"\r\n"

    def _ch(self, axis: str) -> int:
        addr = self.options.get("axes", {}).get(axis, {}).get("address")
        return int(axis[-1]) if addr is None else int(addr)

    def command(self, cmd: str) -> list[str]:
        """Send ``cmd``; return the reply lines between the echo and ``Done``. Raises InstrumentError when the device
        answers ``Error!``, InstrumentTimeout if it does not answer."""
        lines = []
        with self.transport.lock:
            self.transport.write_line(cmd)
            while True:
                line = self.transport.read_line().strip()
                if line == "Done":
                    return lines
                if line == "Error!":
                    raise InstrumentError(self.name, f"device refused {cmd!r} (Error!)")
                if not line.isascii() or not line.isprintable():
                    raise ProtocolError(self.name, f"reply to {cmd!r} is not text: {line[:80]!r}")
                if line and line != cmd:
                    lines.append(line)
                if len(lines) > MAX_REPLY_LINES:
                    raise ProtocolError(self.name, f"reply to {cmd!r} never ends with Done: {lines[:3]!r}...")

    def _open(self) -> None:
        self._version = " ".join(self.command("VER?"))
        self._serial = " ".join(self.command("SN?"))
        self.command("MDC")  # DC mode: the voltages hold still
        self.command("ENABLE1")

    def identify(self) -> Identification:
        """Model and firmware from ``VER?``, serial from ``SN?`` (read when opened)."""
        model, _, firmware = self._version.partition(" ")
        return Identification("OZ Optics", model or "EPC", self._serial.removeprefix("SN:").strip(), firmware)

    def voltages_mv(self) -> dict[int, int]:
        """Drive voltage of each channel in mV ({channel: mV}). Raises InstrumentError if refused, ProtocolError on a
        malformed reply, InstrumentTimeout if the device does not answer."""
        text = " ".join(self.command("V?"))
        found = {int(c): int(v) for c, v in VOLT_RE.findall(text)}
        if not found:
            raise ProtocolError(self.name, f"V? answered {text!r}")
        return found

    def set_voltage_mv(self, channel: int, mv: int) -> None:
        """Set channel ``channel`` (1–4) to ``mv`` millivolts (the device takes −5000…+5000). No qlab limit check: use
        ``move_absolute`` for limit-checked moves. Raises InstrumentError if the device refuses, ProtocolError on a
        malformed reply, InstrumentTimeout if the device does not answer."""
        reply = " ".join(self.command(f"V{channel},{int(mv)}"))
        if f"CH{channel}" not in reply:
            raise ProtocolError(self.name, f"unexpected reply {reply!r}")

    def _move_absolute(self, axis: str, position_deg: float) -> None:
        mv = round(position_deg / DEG_PER_VOLT * 1000)
        if not -5000 <= mv <= 5000:
            raise InstrumentError(self.name, f"{position_deg}° needs {mv} mV, beyond ±5000 mV")
        self.set_voltage_mv(self._ch(axis), mv)

    def _move_relative(self, axis: str, delta_deg: float) -> None:
        self._move_absolute(axis, self.position(axis) + delta_deg)

    def _home(self, axis: str) -> None:
        self.command(f"VZ{self._ch(axis)}")

    def position(self, axis: str | None = None) -> float:
        ax = self._axis(axis)
        voltages = self.voltages_mv()
        if self._ch(ax) not in voltages:
            raise ProtocolError(self.name, f"V? reply lacks channel {self._ch(ax)}: {voltages}")
        return voltages[self._ch(ax)] / 1000 * DEG_PER_VOLT

    def is_busy(self, axis: str | None = None) -> bool:
        return False  # piezo squeezers settle in microseconds

    def status(self) -> dict[str, Any]:
        return {**super().status(), "mode": " ".join(self.command("M?"))}
