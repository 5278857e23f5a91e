"""Toptica DLC pro diode-laser controller: DeCoF command line over TCP 1998 (monitoring line on 1999).

Banner ``... DeCoF Command Line\\r\\n> ``; every reply ends with the prompt ``\\n> ``.
``(param-ref 'laser1:dl:cc:current-set)`` -> ``120.5``; ``(param-set! 'name value)`` -> ``0`` (ok), a
negative number (error) or a positive one (warning); a bad command answers a line starting ``Error:``.
Emission needs the key switch, a closed interlock and the front-panel emission button; software only
enables the current driver (``cc:enabled``), so ``output()`` reads the real ``emission`` state.

Config block::

    pump:
      driver: toptica.dlcpro
      backend: 192.168.1.20        # host[:port], or sim
      limits: {current_a: {max: 0.18}}
"""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from typing import Any

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.laser import Laser
from qlab.sim.device import DeviceSimulator

PROMPT = b"\n> "
BANNER = b"DeCoF Command Line\r\n> "


class DLCPro(Laser):
    model = "Toptica DLC pro"
    transport_kind = "tcp"
    default_port = 1998
    write_termination = b"\n"
    read_termination = PROMPT

    def _reply(self) -> str:
        text = self.transport.read_until(PROMPT).decode("ascii", "replace")
        return text[: -len(PROMPT)].strip()

    def _ref(self, param: str) -> str:
        with self.transport.lock:
            self.transport.write_line(f"(param-ref '{param})")
            text = self._reply()
        if text.startswith("Error:"):
            raise InstrumentError(self.name, f"{param}: {text}")
        return text

    def _float(self, param: str) -> float:
        text = self._ref(param)
        try:
            return float(text)
        except ValueError:
            raise ProtocolError(self.name, f"{param} = {text!r}, not a number") from None

    def _bool(self, param: str) -> bool:
        text = self._ref(param)
        if text not in ("#t", "#f"):
            raise ProtocolError(self.name, f"{param} = {text!r}, not a boolean")
        return text == "#t"

    def _set(self, param: str, value: str) -> None:
        with self.transport.lock:
            self.transport.write_line(f"(param-set! '{param} {value})")
            text = self._reply()
        if text.startswith("Error:"):
            raise InstrumentError(self.name, f"{param}: {text}")
        try:
            code = int(text)
        except ValueError:
            raise ProtocolError(self.name, f"param-set! answered {text!r}") from None
        if code < 0:
            raise InstrumentError(self.name, f"setting {param} to {value} refused with code {code}")

    def _open(self) -> None:
        banner = self.transport.read_until(b"> ").decode("ascii", "replace")
        if "DeCoF" not in banner:
            raise ProtocolError(self.name, f"unexpected banner {banner!r}")
        self._type = self._ref("system-type").strip('"')
        self._serial = self._ref("serial-number").strip('"')
        self._fw = self._ref("fw-ver").strip('"')

    def identify(self) -> str:
        return f"Toptica {self._type} serial {self._serial} firmware {self._fw}"

    def _set_current(self, current_a: float) -> None:
        self._set("laser1:dl:cc:current-set", f"{current_a * 1e3:.3f}")

    def _set_temperature(self, temperature_c: float) -> None:
        self._set("laser1:dl:tc:temp-set", f"{temperature_c:.3f}")

    def _set_output(self, on: bool) -> None:
        self._set("laser1:dl:cc:enabled", "#t" if on else "#f")

    def output(self) -> bool:
        return self._bool("emission")

    def current_setpoint(self) -> float:
        return self._float("laser1:dl:cc:current-set") * 1e-3

    def measured_current(self) -> float:
        return self._float("laser1:dl:cc:current-act") * 1e-3

    def temperature_setpoint(self) -> float:
        return self._float("laser1:dl:tc:temp-set")

    def measured_temperature(self) -> float:
        return self._float("laser1:dl:tc:temp-act")

    def measured_power(self) -> float:
        return math.nan  # no calibrated power readback in qlab's command set: use an external meter

    def protection(self) -> dict[str, bool]:
        return {"interlock": self._bool("interlock-open"), "tec_fault": self._bool("laser1:dl:tc:fault")}


class DLCProSimulator(DeviceSimulator):
    model_id = "dlcpro"

    def __init__(self, lab: Any = None, name: str = "", options: dict | None = None):
        super().__init__(lab, name, options)
        p = lab.lasers[name]["p"] if lab is not None and name in lab.lasers else None
        self.params: dict[str, Any] = {
            "system-type": '"DLCpro"', "serial-number": '"DLC-SIM-0042"', "fw-ver": '"2.4.0"',
            "system-health": 0, "key-switch": True, "emission-button": True,
            "interlock-open": not (p.interlock_closed if p else True),
            "laser1:dl:cc:enabled": False, "laser1:dl:cc:current-set": 0.0, "laser1:dl:cc:current-clip": 200.0,
            "laser1:dl:cc:status-txt": '"OK"', "laser1:dl:tc:temp-set": 25.0, "laser1:dl:tc:fault": False,
            "laser1:dl:tc:ready": True}
        self.writable = {"laser1:dl:cc:enabled", "laser1:dl:cc:current-set", "laser1:dl:cc:current-clip",
                         "laser1:dl:tc:temp-set"}

    def connect(self) -> None:
        self.reply(BANNER)

    def emission(self) -> bool:
        p = self.params
        return bool(p["laser1:dl:cc:enabled"] and p["key-switch"] and p["emission-button"]
                    and not p["interlock-open"])

    def _value(self, name: str) -> Any:
        p = self.params
        if name == "emission":
            return self.emission()
        if name == "laser1:dl:cc:current-act":
            return p["laser1:dl:cc:current-set"] if self.emission() else 0.0
        if name == "laser1:dl:cc:voltage-act":
            return 1.9 if self.emission() else 0.0
        if name == "laser1:dl:tc:temp-act":
            return p["laser1:dl:tc:temp-set"]
        return p[name]

    @staticmethod
    def _fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "#t" if v else "#f"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    def _couple(self) -> None:
        if self.lab is not None and self.name in self.lab.lasers:
            self.lab.set_laser(self.name, on=self.emission(),
                               current_a=self.params["laser1:dl:cc:current-set"] * 1e-3,
                               temperature_c=self.params["laser1:dl:tc:temp-set"])

    def handle(self) -> None:
        while (i := self.inbuf.find(b"\n")) >= 0:
            line = bytes(self.inbuf[:i]).decode("ascii", "replace").strip()
            del self.inbuf[: i + 1]
            self.reply(self._execute(line).encode() + PROMPT)

    def _execute(self, line: str) -> str:
        if m := re.fullmatch(r"\(param-ref '([\w:-]+)\)", line):
            try:
                return self._fmt(self._value(m.group(1)))
            except KeyError:
                return f"Error: -1 unknown parameter {m.group(1)}"
        if m := re.fullmatch(r"\(param-set! '([\w:-]+) (.+)\)", line):
            name, raw = m.group(1), m.group(2).strip()
            if name in ("emission", "laser1:dl:cc:current-act", "laser1:dl:cc:voltage-act", "laser1:dl:tc:temp-act"):
                return "-2"  # measured values are read-only
            if name not in self.params:
                return f"Error: -1 unknown parameter {name}"
            if name not in self.writable:
                return "-2"  # read-only
            old = self.params[name]
            try:
                value = (raw == "#t") if isinstance(old, bool) else float(raw)
            except ValueError:
                return "-3"
            if isinstance(old, bool) and raw not in ("#t", "#f"):
                return "-3"
            if name == "laser1:dl:cc:current-set" and not 0 <= value <= self.params["laser1:dl:cc:current-clip"]:
                return "-4"  # above the current clip
            self.params[name] = value
            self._couple()
            return "0"
        return f"Error: 2 unknown command {line!r}"

    # -- physical controls ---------------------------------------------------------------------------------
    def set_interlock(self, closed: bool) -> None:
        self.params["interlock-open"] = not closed
        self._couple()

    # -- monitoring line (qlab sim serve dlcpro --tcp PORT serves it on PORT + 1) ------------------------
    def serve_second_port(self, port: int, stop: threading.Event) -> None:
        from qlab.sim.serve import serve_clients

        serve_clients(port, stop, self._monitor)

    def _monitor(self, conn: socket.socket, stop: threading.Event) -> None:
        subs: dict[str, float] = {}
        conn.settimeout(0.05)
        buf, last = b"", {}
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(1024)
                    if not data:
                        return
                    buf += data
                except TimeoutError:
                    pass
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if m := re.fullmatch(rb"\(add '([\w:-]+) (\d+)\)", line.strip()):
                        subs[m.group(1).decode()] = int(m.group(2)) / 1000
                now = time.time()
                for name, every in subs.items():
                    if now - last.get(name, 0) >= every:
                        last[name] = now
                        try:
                            val = self._fmt(self._value(name))
                        except KeyError:
                            val = "#f"
                        conn.sendall(f"({now:.3f} '{name} {val})\n".encode())


DLCPro.simulator_class = DLCProSimulator
