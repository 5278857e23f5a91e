"""Simulated ID Quantique ID120: the SCPI-like command set in device units; bias above breakdown sets the
simulated detector's efficiency, dead time and enable act on its clicks."""

from __future__ import annotations

import math
from typing import Any

from qlab.drivers.idquantique.id120 import BREAKDOWN_V, EXCESS_SCALE_V

from qlab.sim.device import DeviceSimulator
from qlab.sim.scpi import ERR_DATA_RANGE, ScpiParser, handle_scpi_lines


class ID120Simulator(DeviceSimulator):
    model_id = "id120"
    ranges = {"THRESHOLD:VOLTAGE": (0, 1_047_000, 500), "DEADTIME:TIME": (40, 1_000_000, 40),
              "BIAS:VOLTAGE": (0, 250_000_000, 80_000), "COUNTERS:INTEGRATION_TIME": (200, 100_000, 1),
              "REG:TEMP_SET_POINT": (-60_000, 25_000, 1)}

    def __init__(self, lab: Any = None, name: str = "", options: dict | None = None):
        super().__init__(lab, name, options)
        self.values = {"THRESHOLD:VOLTAGE": 100_000, "DEADTIME:TIME": 1000, "BIAS:VOLTAGE": 0,
                       "COUNTERS:INTEGRATION_TIME": 1000, "REG:TEMP_SET_POINT": -40_000}
        det = lab.detectors.get(name) if lab is not None else None
        self.eta_max = det.p.efficiency / (1 - math.exp(-40 / EXCESS_SCALE_V)) if det else 0.8
        self.run = True
        if det is not None:  # start at the bias giving the configured efficiency (40 V excess)
            self.values["BIAS:VOLTAGE"] = int(round((BREAKDOWN_V + 40) * 1e6 / 80_000)) * 80_000
            self.values["DEADTIME:TIME"] = int(round(det.p.dead_time_ns / 40)) * 40
        s = self.scpi = ScpiParser()
        s.route("*IDN?", lambda a: "IDQ,ID120,0012345,2.1.0 (simulated)")
        s.route("SYSTem:ERRor?", lambda a: s.pop_error())
        for key in self.ranges:
            s.route(key, lambda a, k=key: self._set(k, a))
            s.route(key + "?", lambda a, k=key: str(self.values[k]))
        s.route("DEADTIME:CAPABILITY?", lambda a: "40,1000000,40")
        s.route("BIAS:CAPABILITY?", lambda a: "0,250000000,80000")
        s.route("BIAS:ERROR_STATUS?", lambda a: "FALSE")
        s.route("REG:RUN", self._set_run)
        s.route("REG:RUN?", lambda a: "TRUE" if self.run else "FALSE")
        s.route("REG:STATE?", lambda a: "LOCKED" if self.run else "OFF")
        s.route("REG:MEASURED_TEMP?", lambda a: str(self.values["REG:TEMP_SET_POINT"] if self.run else 20_000))
        s.route("COUNTERS:DETECTION_FREQ?", lambda a: f"{self._rate():.0f}")
        s.route("COUNTERS:DETECTION_COUNT?",
                lambda a: f"{self._rate() * self.values['COUNTERS:INTEGRATION_TIME'] / 1000:.0f}")
        self._couple()

    def _efficiency(self) -> float:
        excess = self.values["BIAS:VOLTAGE"] * 1e-6 - BREAKDOWN_V
        return 0.0 if excess <= 0 or not self.run else self.eta_max * (1 - math.exp(-excess / EXCESS_SCALE_V))

    def _couple(self) -> None:
        if self.lab is not None and self.name in self.lab.detectors:
            self.lab.set_detector(self.name, efficiency=self._efficiency(), enabled=self.run,
                                  dead_time_ns=float(self.values["DEADTIME:TIME"]))

    def _rate(self) -> float:
        if self.lab is None or self.name not in self.lab.detectors:
            return 0.0
        r = self.lab.expected_rates()["singles_hz"][self.name]
        tau = self.values["DEADTIME:TIME"] * 1e-9
        return r / (1 + r * tau)

    def _set(self, key: str, args: list[str]) -> None:
        lo, hi, step = self.ranges[key]
        v = int(args[0])
        if not lo <= v <= hi or (v - lo) % step:
            self.scpi.push_error(ERR_DATA_RANGE)
            return
        self.values[key] = v
        self._couple()

    def _set_run(self, args: list[str]) -> None:
        if args[0].upper() not in ("TRUE", "FALSE"):
            raise ValueError(args[0])
        self.run = args[0].upper() == "TRUE"
        self._couple()

    def handle(self) -> None:
        handle_scpi_lines(self, self.scpi)
