"""ID Quantique ID120 visible-range SPAD: SCPI-like driver over USBTMC (pyvisa) and simulator.

Getters ``X?``, setters ``X <int>``; integers in device units: µV for voltages, ns for dead time, ms for
integration, m°C for temperatures. The driver reads the error queue after each setting (verify the
queue command against the manual on hardware). In the simulated lab the bias above breakdown sets the
detection efficiency and the dark-count rate; dead time and enable act on the detector's clicks.

Config block::

    alice_H:
      driver: idquantique.id120
      backend: USB0::0x1DDC::0x0330::1234::INSTR    # or sim
      channel: {tagger: tagger, input: 1, role: alice.H}
      limits: {bias_v: {max: 220}, dead_time_ns: {min: 40}}
"""

from __future__ import annotations

import math
from typing import Any

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.detector import SinglePhotonDetector
from qlab.sim.device import DeviceSimulator
from qlab.sim.scpi import ERR_DATA_RANGE, ScpiParser, handle_scpi_lines

BREAKDOWN_V = 160.0
EXCESS_SCALE_V = 25.0  # efficiency saturates over a few tens of volts of excess bias


class ID120(SinglePhotonDetector):
    model = "ID Quantique ID120"
    transport_kind = "visa"
    write_termination = b"\n"
    read_termination = b"\n"
    capabilities = frozenset({"bias", "dead_time", "enable", "efficiency"})

    def _query(self, cmd: str) -> str:
        return self.transport.query_line(cmd).strip()

    def _int(self, cmd: str) -> int:
        text = self._query(cmd)
        try:
            return int(float(text))
        except ValueError:
            raise ProtocolError(self.name, f"{cmd} answered {text!r}") from None

    def _set(self, cmd: str) -> None:
        with self.transport.lock:
            self.transport.write_line(cmd)
            err = self._query("SYST:ERR?")
        if not err.startswith(("0", "+0")):
            raise InstrumentError(self.name, f"{cmd!r} refused: {err}")

    def _open(self) -> None:
        self._idn = self._query("*IDN?")
        if "ID120" not in self._idn:
            raise ProtocolError(self.name, f"*IDN? answered {self._idn!r}: not an ID120")

    def identify(self) -> str:
        return self._idn

    def _set_enabled(self, on: bool) -> None:
        self._set(f"REG:RUN {'TRUE' if on else 'FALSE'}")

    def enabled(self) -> bool:
        return self._query("REG:RUN?").upper() == "TRUE"

    def _set_bias(self, bias_v: float) -> None:
        step = 80_000
        self._set(f"BIAS:VOLTAGE {int(round(bias_v * 1e6 / step)) * step}")

    def bias_v(self) -> float:
        return self._int("BIAS:VOLTAGE?") * 1e-6

    def _set_dead_time(self, dead_time_ns: float) -> None:
        self._set(f"DEADTIME:TIME {int(round(dead_time_ns / 40)) * 40}")

    def dead_time_ns(self) -> float:
        return float(self._int("DEADTIME:TIME?"))

    def _set_efficiency(self, efficiency: float) -> None:
        # The ID120 sets efficiency through the bias: invert the excess-bias curve of this model.
        if not 0 < efficiency < 1:
            raise InstrumentError(self.name, f"efficiency {efficiency} must be in (0, 1)")
        eta_max = float(self.options.get("efficiency_max", 0.8))
        if efficiency >= eta_max:
            raise InstrumentError(self.name, f"efficiency {efficiency} is above this detector's {eta_max}")
        bias = BREAKDOWN_V - EXCESS_SCALE_V * math.log(1 - efficiency / eta_max)
        self.set_bias(bias)

    def efficiency(self) -> float:
        eta_max = float(self.options.get("efficiency_max", 0.8))
        excess = self.bias_v() - BREAKDOWN_V
        return 0.0 if excess <= 0 else eta_max * (1 - math.exp(-excess / EXCESS_SCALE_V))

    def count_rate_hz(self) -> float | None:
        return float(self._query("COUNTERS:DETECTION_FREQ?"))

    def status(self) -> dict[str, Any]:
        return {**super().status(), "bias_error": self._query("BIAS:ERROR_STATUS?"),
                "temperature_c": self._int("REG:MEASURED_TEMP?") / 1000, "regulation": self._query("REG:STATE?")}


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


ID120.simulator_class = ID120Simulator
