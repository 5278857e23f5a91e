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
from qlab.sim.device import DeviceSimulator
from qlab.sim.scpi import ERR_DATA_RANGE, ERR_SETTINGS_CONFLICT, ScpiParser, handle_scpi_lines, parse_bool, parse_number

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

    def identify(self) -> str:
        return self._idn

    def _set_current(self, current_a: float) -> None:
        self._command(f"SOUR:CURR {current_a:.6g}")

    def _set_temperature(self, temperature_c: float) -> None:
        self._command(f"SOUR2:TEMP {temperature_c:.4g}C")

    def _set_output(self, on: bool) -> None:
        if on:
            self._command("OUTP2 ON")  # the TEC must run before the diode does
        self._command(f"OUTP {'ON' if on else 'OFF'}")

    def output(self) -> bool:
        return self._query("OUTP?") == "1"

    def current_setpoint(self) -> float:
        return self._float("SOUR:CURR?")

    def current_limit(self) -> float:
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
        return {"interlock": self._query("OUTP:PROT:INTL:TRIP?") == "1",
                "keylock": self._query("OUTP:PROT:KEYL:TRIP?") == "1",
                "overtemperature": self._query("OUTP:PROT:OTEM:TRIP?") == "1"}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {**super().snapshot(), "current_limit": {"value": self.current_limit(), "unit": "A"}}


# ==== simulator ================================================================================================

class ITC4001Simulator(DeviceSimulator):
    """SCPI over USBTMC (or a TCP socket), coupled to the SimLab's pump laser."""

    model_id = "itc4001"

    def __init__(self, lab: Any = None, name: str = "", options: dict | None = None):
        super().__init__(lab, name, options)
        p = lab.lasers[name]["p"] if lab is not None and name in lab.lasers else None
        self.interlock_open = not (p.interlock_closed if p else True)
        self.key_off = not (p.key_on if p else True)
        self.current = 0.0
        self.limit = 0.2
        self.temp_set = 25.0
        self.out = False
        self.tec = False
        self.threshold_a = p.threshold_a if p else 0.03
        self.slope_w_per_a = (p.slope_mw_per_a if p else 250.0) * 1e-3
        s = self.scpi = ScpiParser()
        s.route("*IDN?", lambda a: IDN)
        s.route("*RST", lambda a: self._reset())
        s.route("*CLS", lambda a: s.errors.clear())
        s.route("SYSTem:ERRor[:NEXT]?", lambda a: s.pop_error())
        s.route("SOURce1:CURRent[:LEVel][:IMMediate][:AMPLitude]", self._set_current)
        s.route("SOURce1:CURRent[:LEVel][:IMMediate][:AMPLitude]?", lambda a: f"{self.current:.6E}")
        s.route("SOURce1:CURRent:LIMit[:AMPLitude]", self._set_limit)
        s.route("SOURce1:CURRent:LIMit[:AMPLitude]?", lambda a: f"{self.limit:.6E}")
        s.route("SOURce1:CURRent:LIMit:TRIPped?", lambda a: "0")
        s.route("SOURce1:FUNCtion:MODE", lambda a: None if a[0].upper() in ("CURR", "CURRENT") else
                s.push_error(ERR_SETTINGS_CONFLICT))
        s.route("SOURce1:FUNCtion:MODE?", lambda a: "CURR")
        s.route("OUTPut1[:STATe]", self._set_output)
        s.route("OUTPut1[:STATe]?", lambda a: "1" if self.out else "0")
        s.route("OUTPut2[:STATe]", lambda a: setattr(self, "tec", parse_bool(a[0])))
        s.route("OUTPut2[:STATe]?", lambda a: "1" if self.tec else "0")
        s.route("SOURce2:TEMPerature[:SPOint]", self._set_temp)
        s.route("SOURce2:TEMPerature[:SPOint]?", lambda a: f"{self.temp_set:.6E}")
        s.route("MEASure:CURRent1?", lambda a: f"{(self.current if self.out else 0.0):.6E}")
        s.route("MEASure:VOLTage1?", lambda a: f"{(1.8 + 2.0 * self.current if self.out else 0.0):.6E}")
        s.route("MEASure:TEMPerature?", lambda a: f"{(self.temp_set if self.tec else 22.0):.6E}")
        s.route("MEASure:POWer2?", lambda a: f"{self._power_w():.6E}")
        s.route("OUTPut1:PROTection:INTLock:TRIPped?", lambda a: "1" if self.interlock_open else "0")
        s.route("OUTPut1:PROTection:KEYLock:TRIPped?", lambda a: "1" if self.key_off else "0")
        s.route("OUTPut1:PROTection:OTEMperature:TRIPped?", lambda a: "0")
        s.route("SENSe3:TEMPerature:PROTection:TRIPped?", lambda a: "0")

    def _power_w(self) -> float:
        return max(0.0, self.current - self.threshold_a) * self.slope_w_per_a if self.out else 0.0

    def _couple(self) -> None:
        if self.lab is not None and self.name in self.lab.lasers:
            self.lab.set_laser(self.name, on=self.out, current_a=self.current, temperature_c=self.temp_set)

    def _reset(self) -> None:
        self.out, self.tec, self.current, self.limit, self.temp_set = False, False, 0.0, 0.2, 25.0
        self._couple()

    def _set_current(self, a: list[str]) -> None:
        v = parse_number(a[0], "A")
        if not 0.0 <= v <= self.limit:
            self.scpi.push_error(ERR_DATA_RANGE)
            return
        self.current = v
        self._couple()

    def _set_limit(self, a: list[str]) -> None:
        v = parse_number(a[0], "A")
        if not 0.0 <= v <= 4.0:
            self.scpi.push_error(ERR_DATA_RANGE)
            return
        self.limit = v
        self.current = min(self.current, v)
        self._couple()

    def _set_temp(self, a: list[str]) -> None:
        v = parse_number(a[0], "C")
        if not 5.0 <= v <= 45.0:
            self.scpi.push_error(ERR_DATA_RANGE)
            return
        self.temp_set = v
        self._couple()

    def _set_output(self, a: list[str]) -> None:
        on = parse_bool(a[0])
        if on and (self.interlock_open or self.key_off):
            self.scpi.push_error(ERR_SETTINGS_CONFLICT)
            on = False
        self.out = on
        self._couple()

    def handle(self) -> None:
        handle_scpi_lines(self, self.scpi)

    # -- physical controls of the simulated front panel ----------------------------------------------------
    def set_interlock(self, closed: bool) -> None:
        """Open or close the interlock loop; opening it forces the output off at once."""
        self.interlock_open = not closed
        if self.interlock_open and self.out:
            self.out = False
            self._couple()

    def set_key(self, on: bool) -> None:
        self.key_off = not on
        if self.key_off and self.out:
            self.out = False
            self._couple()


ITC4001.simulator_class = ITC4001Simulator
