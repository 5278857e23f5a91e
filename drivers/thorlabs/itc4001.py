"""Thorlabs ITC4001 laser-diode and TEC controller: SCPI driver and protocol-faithful simulator.

USBTMC (VID 0x1313, PID 0x804A) through pyvisa, terminator ``\\n``. After every setting the driver reads
the SCPI error queue (``SYST:ERR?``) so a refused command becomes a typed error, not a silent no-op.
While the interlock is open, the key lock is off or temperature protection trips, the output is forced
off, exactly as the instrument does.

Config block::

    pump:
      driver: thorlabs.itc4001
      backend: USB0::0x1313::0x804A::M00404162::INSTR   # or sim
      limits: {current_a: {max: 0.2}, temperature_c: {min: 15, max: 35}}
      settings: {current_a: 0.12, temperature_c: 25.0}
"""

from __future__ import annotations

from typing import Any

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.laser import Laser
from qlab.types import Identification

IDN = "Thorlabs,ITC4001,M00404162,1.8.0/1.5.0/2.3.0"


class ITC4001(Laser):
    model = "Thorlabs ITC4001"
    transport_kind = "visa"
    write_termination = b"\n"
    read_termination = b"\n"

    def _query(self, cmd: str) -> str:
        return self.transport.query_line(cmd).strip()

    def _float(self, cmd: str) -> float:
        text = self._query(cmd)
        try:
            return float(text)
        except ValueError:
            raise ProtocolError(self.name, f"{cmd} answered {text!r}, not a number") from None

    def _command(self, cmd: str) -> None:
        with self.transport.lock:
            self.transport.write_line(cmd)
            err = self._query("SYST:ERR?")
        code, _, msg = err.partition(",")
        try:
            ok = int(code) == 0
        except ValueError:
            raise ProtocolError(self.name, f"SYST:ERR? answered {err!r}") from None
        if not ok:
            raise InstrumentError(self.name, f"{cmd!r} refused by the device: {code} {msg.strip(chr(34))}")

    def _open(self) -> None:
        idn = self._query("*IDN?")
        if "ITC4" not in idn and "CLD1" not in idn:
            raise ProtocolError(self.name, f"*IDN? answered {idn!r}: not an ITC4000-series controller")
        self._idn = idn
        self._query("SYST:ERR?")

    def identify(self) -> Identification:
        """The ``*IDN?`` reply read when opened."""
        return Identification.from_idn(self._idn)

    def _set_current(self, current_a: float) -> None:
        self._command(f"SOUR:CURR {current_a:.6g}")

    def _set_temperature(self, temperature_c: float) -> None:
        self._command(f"SOUR2:TEMP {temperature_c:.4g}C")

    def _set_output(self, on: bool) -> None:
        if on:
            self._command("OUTP2 ON")  # the TEC must run before the diode does
        self._command(f"OUTP {'ON' if on else 'OFF'}")

    def _bool(self, cmd: str) -> bool:
        text = self._query(cmd)
        if text not in ("0", "1"):
            raise ProtocolError(self.name, f"{cmd} answered {text!r}, not 0 or 1")
        return text == "1"

    def output(self) -> bool:
        return self._bool("OUTP?")

    def current_setpoint(self) -> float:
        return self._float("SOUR:CURR?")

    def current_limit(self) -> float:
        """The device's own current limit in A (``SOUR:CURR:LIM?``). Raises ProtocolError on a malformed reply,
        InstrumentTimeout if the device does not answer."""
        return self._float("SOUR:CURR:LIM?")

    def measured_current(self) -> float:
        return self._float("MEAS:CURR?")

    def temperature_setpoint(self) -> float:
        return self._float("SOUR2:TEMP?")

    def measured_temperature(self) -> float:
        return self._float("MEAS:TEMP?")

    def measured_power(self) -> float:
        return self._float("MEAS:POW2?") * 1e3

    def protection(self) -> dict[str, bool]:
        return {"interlock": self._bool("OUTP:PROT:INTL:TRIP?"),
                "keylock": self._bool("OUTP:PROT:KEYL:TRIP?"),
                "overtemperature": self._bool("OUTP:PROT:OTEM:TRIP?")}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {**super().snapshot(), "current_limit": {"value": self.current_limit(), "unit": "A"}}
