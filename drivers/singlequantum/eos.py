"""Single Quantum Eos SNSPD system: JSON over TCP (control port 12000, counts port 12345).

The client sends JSON objects; the system answers ``{"label": ..., "value": ...}`` objects separated by
``\\x17``; errors carry a label containing "Error". The counts port streams ``timestamp,c1,c2,...\\n``
once per measurement period. One qlab detector is one channel (``address``, 1-based) of the system.

Config block::

    bob_H:
      driver: singlequantum.eos
      backend: 192.168.1.30       # or sim
      address: 1
      channel: {tagger: tagger, input: 5, role: bob.H}
      limits: {bias_current_ua: {max: 20}}
"""

from __future__ import annotations

import json
from typing import Any

from qlab.drivers.guard import parse_errors

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.detector import SinglePhotonDetector
from qlab.types import Identification

SEP = b"\x17"
SWITCHING_UA = 16.0  # bias where efficiency saturates; above it the wire latches (no clicks)
N_DETECTORS = 8


class EosSNSPD(SinglePhotonDetector):
    model = "Single Quantum Eos"
    transport_kind = "tcp"
    default_port = 12000
    write_termination = b""
    read_termination = SEP
    capabilities = frozenset({"bias_current", "threshold", "enable"})

    def __init__(self, *args: Any, counts_transport: Any = None, **kw: Any):
        super().__init__(*args, **kw)
        self._counts = counts_transport
        self._props: dict[str, Any] = {}

    @property
    def index(self) -> int:
        return int(self.options.get("address") or 1) - 1

    def _exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        with self.transport.lock:
            self.transport.write(json.dumps(message).encode())
            raw = self.transport.read_until(SEP)[:-1]
        try:
            reply = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, absurd nesting
            raise ProtocolError(self.name, f"not JSON: {raw[:80]!r}") from None
        if not isinstance(reply, dict) or "value" not in reply:
            raise ProtocolError(self.name, f"reply is not a {{label, value}} object: {raw[:80]!r}")
        if "Error" in str(reply.get("label", "")):
            raise InstrumentError(self.name, f"{message.get('command') or message.get('request')}: {reply['value']}")
        return reply

    def _refresh(self) -> dict[str, Any]:
        props = self._exchange({"request": "labelProps", "value": "None"})["value"]
        if not isinstance(props, dict):
            raise ProtocolError(self.name, f"labelProps value is not an object: {str(props)[:80]!r}")
        self._props = props
        return self._props

    def _prop(self, key: str) -> Any:
        """This channel's entry of a per-detector property list; ProtocolError if the reply lacks it."""
        with parse_errors(self.name, f"labelProps {key}"):
            return self._refresh()[key][self.index]

    def _open(self) -> None:
        props = self._refresh()
        with parse_errors(self.name, "labelProps NumberOfDetectors"):
            n_detectors = int(props.get("NumberOfDetectors", 0))
        if self.index >= n_detectors:
            raise InstrumentError(self.name, f"channel {self.index + 1} does not exist on this Eos")

    def identify(self) -> Identification:
        """The system's detector count (read when opened) and this driver's channel."""
        return Identification("Single Quantum", "Eos",
                              details=f"{self._props.get('NumberOfDetectors')} detectors, channel {self.index + 1}")

    def _set_all(self, command: str, label: str, key: str, value: float) -> None:
        with parse_errors(self.name, f"labelProps {key}"):
            values = list(self._refresh()[key])
            values[self.index] = value
        self._exchange({"command": command, "label": label, "value": values})

    def _set_bias_current(self, bias_ua: float) -> None:
        self._set_all("SetAllBiasCurrents", "BiasCurrent", "BiasCurrent", bias_ua)

    def bias_current_ua(self) -> float:
        with parse_errors(self.name, "labelProps BiasCurrent"):
            return float(self._prop("BiasCurrent"))

    def _set_threshold(self, threshold_v: float) -> None:
        self._set_all("SetAllTriggerLevels", "TriggerLevel", "TriggerLevel", threshold_v * 1e3)

    def _set_enabled(self, on: bool) -> None:
        self._exchange({"command": "DetectorEnable", "label": "DetectorEnable", "value": bool(on)})

    def enabled(self) -> bool:
        value = self._refresh().get("DetectorEnable")
        if not isinstance(value, bool):
            raise ProtocolError(self.name, f"labelProps DetectorEnable = {str(value)[:40]!r}, not true/false")
        return value

    def set_measurement_period_ms(self, period_ms: int) -> None:
        """Counting period of the counts port in ms (the device takes integers ≥ 10). Raises InstrumentError if
        refused, ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self._exchange({"command": "SetMeasurementPeriod", "label": "InptMeasurementPeriod", "value": int(period_ms)})

    def count_rate_hz(self) -> float | None:
        """This channel's count rate in Hz from the next counts-port line. Raises ProtocolError on a malformed reply,
        InstrumentTimeout if the device does not answer."""
        if self._counts is None:
            host = str(self.options.get("backend", "")).rpartition(":")[0] or self.options.get("backend")
            from qlab.transport.tcp import TcpTransport

            self._counts = TcpTransport(self.name, host, 12345)
        raw = self._counts.read_until(b"\n")
        with parse_errors(self.name, f"counts line {raw[:80]!r}"):
            line = raw.decode("ascii").strip().split(",")
            period_s = float(self._props.get("MeasurementPeriod", 100)) / 1e3
            return float(line[1 + self.index]) / period_s
