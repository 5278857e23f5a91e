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

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.laser import Laser
from qlab.types import Identification

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

    def identify(self) -> Identification:
        """System type, serial number and firmware version read when opened."""
        return Identification("Toptica", self._type, self._serial, self._fw)

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
