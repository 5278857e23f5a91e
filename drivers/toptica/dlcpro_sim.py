"""Simulated Toptica DLC pro: the DeCoF command line (banner, prompt, param-ref / param-set!), emission
interlocks, and the monitoring line that `qlab sim serve dlcpro --tcp PORT` serves on PORT + 1."""

from __future__ import annotations

import re
import socket
import threading
import time
from typing import Any

from qlab.drivers.toptica.dlcpro import BANNER, PROMPT

from qlab.sim.device import DeviceSimulator


class DLCProSimulator(DeviceSimulator):
    model_id = "dlcpro"
    frame_end = PROMPT

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
            if self.device_error_active:
                self.reply(b"Error: -10 system fault (simulated)" + PROMPT)
                continue
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
