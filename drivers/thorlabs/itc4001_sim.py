"""Simulated Thorlabs ITC4001: SCPI with its error queue, interlock and key lock, coupled to the simulated
lab's pump laser."""

from __future__ import annotations

from typing import Any

from qlab.drivers.thorlabs.itc4001 import IDN

from qlab.sim.device import DeviceSimulator
from qlab.sim.scpi import ERR_DATA_RANGE, ERR_SETTINGS_CONFLICT, ScpiParser, handle_scpi_lines, parse_bool, parse_number


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
