"""Simulated OZ Optics EPC-400: echo, ``Done`` / ``Error!`` replies, four squeezer channels whose voltages
set retardances in the simulated lab."""

from __future__ import annotations

import re
from typing import Any

from qlab.drivers.ozoptics.epc400 import DEG_PER_VOLT

from qlab.sim.device import DeviceSimulator


class EPC400Simulator(DeviceSimulator):
    model_id = "epc400"
    frame_end = b"\r\n"

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
            if self.device_error_active:
                self.reply(b"Error!\r\n")
                continue
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
