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
from qlab.types import Identification

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
        except (ValueError, OverflowError):
            raise ProtocolError(self.name, f"{cmd} answered {text!r}") from None

    def _set(self, cmd: str) -> None:
        with self.transport.lock:
            self.transport.write_line(cmd)
            err = self._query("SYST:ERR?")
        code = err.partition(",")[0].strip()
        try:
            ok = int(code) == 0
        except ValueError:
            raise ProtocolError(self.name, f"SYST:ERR? answered {err!r}") from None
        if not ok:
            raise InstrumentError(self.name, f"{cmd!r} refused: {err}")

    def _open(self) -> None:
        self._idn = self._query("*IDN?")
        if "ID120" not in self._idn:
            raise ProtocolError(self.name, f"*IDN? answered {self._idn!r}: not an ID120")

    def identify(self) -> Identification:
        """The ``*IDN?`` reply read when opened."""
        return Identification.from_idn(self._idn)

    def _set_enabled(self, on: bool) -> None:
        self._set(f"REG:RUN {'TRUE' if on else 'FALSE'}")

    def enabled(self) -> bool:
        text = self._query("REG:RUN?").upper()
        if text not in ("TRUE", "FALSE"):
            raise ProtocolError(self.name, f"REG:RUN? answered {text!r}, not TRUE or FALSE")
        return text == "TRUE"

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
        text = self._query("COUNTERS:DETECTION_FREQ?")
        try:
            return float(text)
        except ValueError:
            raise ProtocolError(self.name, f"COUNTERS:DETECTION_FREQ? answered {text!r}") from None

    def status(self) -> dict[str, Any]:
        return {**super().status(), "bias_error": self._query("BIAS:ERROR_STATUS?"),
                "temperature_c": self._int("REG:MEASURED_TEMP?") / 1000, "regulation": self._query("REG:STATE?")}
