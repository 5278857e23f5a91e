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
from qlab.sim.device import DeviceSimulator

DEG_PER_VOLT = 72.0  # ±5 V spans ±360° of retardance (order of magnitude of real squeezers)
VOLT_RE = re.compile(r"CH(\d)\s*([+-]?\d+)")


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
        """Send ``cmd``; return the reply lines between the echo and ``Done``."""
        lines = []
        with self.transport.lock:
            self.transport.write_line(cmd)
            while True:
                line = self.transport.read_line().strip()
                if line == "Done":
                    return lines
                if line == "Error!":
                    raise InstrumentError(self.name, f"device refused {cmd!r} (Error!)")
                if line and line != cmd:
                    lines.append(line)

    def _open(self) -> None:
        self._version = " ".join(self.command("VER?"))
        self._serial = " ".join(self.command("SN?"))
        self.command("MDC")  # DC mode: the voltages hold still
        self.command("ENABLE1")

    def identify(self) -> str:
        return f"OZ Optics EPC {self._version} serial {self._serial}"

    def voltages_mv(self) -> dict[int, int]:
        text = " ".join(self.command("V?"))
        found = {int(c): int(v) for c, v in VOLT_RE.findall(text)}
        if not found:
            raise ProtocolError(self.name, f"V? answered {text!r}")
        return found

    def set_voltage_mv(self, channel: int, mv: int) -> None:
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
        return self.voltages_mv()[self._ch(ax)] / 1000 * DEG_PER_VOLT

    def is_busy(self, axis: str | None = None) -> bool:
        return False  # piezo squeezers settle in microseconds

    def status(self) -> dict[str, Any]:
        return {**super().status(), "mode": " ".join(self.command("M?"))}


class EPC400Simulator(DeviceSimulator):
    model_id = "epc400"

    def __init__(self, lab: Any = None, name: str = "", options: dict | None = None):
        super().__init__(lab, name, options)
        axes = self.options.get("axes") or {f"ch{i}": {"address": i} for i in range(1, 5)}
        self.axis_of = {int(spec.get("address") or ax[-1]): ax for ax, spec in axes.items()}
        self.mv = {c: 0 for c in range(1, 5)}
        self.freq = {c: 0 for c in range(1, 5)}
        self.mode = "DC"
        self.enabled = True
        for c in self.axis_of:
            self._couple(c)

    def _couple(self, ch: int) -> None:
        if self.lab is not None and ch in self.axis_of:
            retard = (self.mv[ch] / 1000 * DEG_PER_VOLT if self.enabled else 0.0) / 360.0
            self.lab.set_retardance(self.name, self.axis_of[ch], retard)

    def _out(self, *lines: str) -> None:
        self.reply("".join(f"{ln}\r\n" for ln in (*lines, "Done")).encode())

    def handle(self) -> None:
        while (i := self.inbuf.find(b"\r\n")) >= 0:
            cmd = bytes(self.inbuf[:i]).decode("ascii", "replace").strip()
            del self.inbuf[: i + 2]
            self.reply(f"{cmd}\r\n".encode())  # the EPC echoes each command
            try:
                self._command(cmd.upper())
            except (ValueError, KeyError, IndexError):
                self.reply(b"Error!\r\n")

    def _command(self, c: str) -> None:
        if c == "V?":
            self._out("Voltage(mV): " + " ".join(f"CH{k} {v:+d}" for k, v in self.mv.items()))
        elif m := re.fullmatch(r"V([1-4]),([+-]?\d+)", c):
            ch, mv = int(m.group(1)), int(m.group(2))
            if not -5000 <= mv <= 5000:
                raise ValueError(mv)
            self.mv[ch] = mv
            self._couple(ch)
            self._out(f"Set CH{ch} DC Voltage at: {mv}mV")
        elif m := re.fullmatch(r"V([HLZ])([1-4])", c):
            ch = int(m.group(2))
            self.mv[ch] = {"H": 5000, "L": -5000, "Z": 0}[m.group(1)]
            self._couple(ch)
            self._out(f"Set CH{ch} DC Voltage at: {self.mv[ch]}mV")
        elif c == "M?":
            self._out(f"Work Mode: {'DC' if self.mode == 'DC' else 'AC(Sine)'}")
        elif c in ("MDC", "MAC"):
            self.mode = c[1:]
            self._out()
        elif c == "F?":
            self._out("Frequency(Hz): " + " ".join(f"CH{k} {v}" for k, v in self.freq.items()))
        elif m := re.fullmatch(r"F([1-4]),(\d+)", c):
            hz = int(m.group(2))
            if not 0 <= hz <= 100:
                raise ValueError(hz)
            self.freq[int(m.group(1))] = hz
            self._out()
        elif c == "SN?":
            self._out("SN: 12345-EPC")
        elif c == "VER?":
            self._out("EPC-400 v2.1 (simulated)")
        elif c in ("SAVE", "RESET"):
            if c == "RESET":
                self.mv = {k: 0 for k in self.mv}
                for ch in self.axis_of:
                    self._couple(ch)
            self._out()
        elif c in ("ENABLE0", "ENABLE1"):
            self.enabled = c.endswith("1")
            for ch in self.axis_of:
                self._couple(ch)
            self._out()
        else:
            raise KeyError(c)


EPC400.simulator_class = EPC400Simulator
