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
import math
import socket
import threading
import time
from typing import Any

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.detector import SinglePhotonDetector
from qlab.sim.device import DeviceSimulator

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

    @classmethod
    def simulated(cls, name: str, sim: Any, limits: Any, cfg: Any, options: dict) -> EosSNSPD:
        from qlab.instruments.factory import simulated_transport

        dev = EosSimulator(sim, name, options)
        sim.device_sims[name] = dev
        return cls(name, transport=simulated_transport(cls, name, dev, cfg.timeout_s), limits=limits,
                   clock=sim.clock, options=options, counts_transport=dev.counts_link())

    @property
    def index(self) -> int:
        return int(self.options.get("address") or 1) - 1

    def _exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        with self.transport.lock:
            self.transport.write(json.dumps(message).encode())
            raw = self.transport.read_until(SEP)[:-1]
        try:
            reply = json.loads(raw)
        except json.JSONDecodeError:
            raise ProtocolError(self.name, f"not JSON: {raw[:80]!r}") from None
        if "Error" in str(reply.get("label", "")):
            raise InstrumentError(self.name, f"{message.get('command') or message.get('request')}: {reply['value']}")
        return reply

    def _refresh(self) -> dict[str, Any]:
        self._props = self._exchange({"request": "labelProps", "value": "None"})["value"]
        return self._props

    def _open(self) -> None:
        props = self._refresh()
        if self.index >= int(props.get("NumberOfDetectors", 0)):
            raise InstrumentError(self.name, f"channel {self.index + 1} does not exist on this Eos")

    def identify(self) -> str:
        return f"Single Quantum Eos ({self._props.get('NumberOfDetectors')} detectors), channel {self.index + 1}"

    def _set_all(self, command: str, label: str, key: str, value: float) -> None:
        values = list(self._refresh()[key])
        values[self.index] = value
        self._exchange({"command": command, "label": label, "value": values})

    def _set_bias_current(self, bias_ua: float) -> None:
        self._set_all("SetAllBiasCurrents", "BiasCurrent", "BiasCurrent", bias_ua)

    def bias_current_ua(self) -> float:
        return float(self._refresh()["BiasCurrent"][self.index])

    def _set_threshold(self, threshold_v: float) -> None:
        self._set_all("SetAllTriggerLevels", "TriggerLevel", "TriggerLevel", threshold_v * 1e3)

    def _set_enabled(self, on: bool) -> None:
        self._exchange({"command": "DetectorEnable", "label": "DetectorEnable", "value": bool(on)})

    def enabled(self) -> bool:
        return bool(self._refresh()["DetectorEnable"])

    def set_measurement_period_ms(self, period_ms: int) -> None:
        self._exchange({"command": "SetMeasurementPeriod", "label": "InptMeasurementPeriod", "value": int(period_ms)})

    def count_rate_hz(self) -> float | None:
        if self._counts is None:
            host = str(self.options.get("backend", "")).rpartition(":")[0] or self.options.get("backend")
            from qlab.transport.tcp import TcpTransport

            self._counts = TcpTransport(self.name, host, 12345)
        line = self._counts.read_until(b"\n").decode().strip().split(",")
        period_s = float(self._props.get("MeasurementPeriod", 100)) / 1e3
        return float(line[1 + self.index]) / period_s


class EosSimulator(DeviceSimulator):
    model_id = "eos"

    def __init__(self, lab: Any = None, name: str = "", options: dict | None = None):
        super().__init__(lab, name, options)
        self.index = int(self.options.get("address") or 1) - 1
        self.state: dict[str, Any] = {"NumberOfDetectors": N_DETECTORS, "BiasCurrent": [14.0] * N_DETECTORS,
                                      "TriggerLevel": [150.0] * N_DETECTORS, "DetectorEnable": True,
                                      "MeasurementPeriod": 100}
        det = lab.detectors.get(name) if lab is not None else None
        self.eta_max = det.p.efficiency / self._curve(14.0) if det is not None else 0.9
        self._couple()

    @staticmethod
    def _curve(bias_ua: float) -> float:
        if bias_ua >= SWITCHING_UA:
            return 0.0  # latched: the wire stays normal-conducting
        return 1.0 / (1.0 + math.exp(-(bias_ua - 11.0) / 1.0))

    def _couple(self) -> None:
        if self.lab is not None and self.name in self.lab.detectors:
            eff = min(1.0, self.eta_max * self._curve(self.state["BiasCurrent"][self.index]))
            self.lab.set_detector(self.name, efficiency=eff, enabled=bool(self.state["DetectorEnable"]))

    def _send(self, label: str, value: Any) -> None:
        self.reply(json.dumps({"label": label, "value": value}).encode() + SEP)

    def handle(self) -> None:
        while self.inbuf:
            try:
                obj, end = json.JSONDecoder().raw_decode(self.inbuf.decode("utf-8", "replace").lstrip())
            except json.JSONDecodeError:
                if self.inbuf.rstrip().endswith(b"}"):
                    self.inbuf.clear()
                    self._send("Error", "malformed JSON")
                return
            lead = len(self.inbuf) - len(self.inbuf.lstrip())
            del self.inbuf[: lead + end]
            self._dispatch(obj)

    def _dispatch(self, obj: dict[str, Any]) -> None:
        if obj.get("request") == "labelProps":
            self._send("labelProps", self.state)
            return
        cmd, value = obj.get("command"), obj.get("value")
        if cmd == "SetAllBiasCurrents":
            if not isinstance(value, list) or len(value) != N_DETECTORS or not all(0 <= v <= 40 for v in value):
                self._send("BiasCurrentError", f"expected {N_DETECTORS} currents in 0..40 µA")
                return
            self.state["BiasCurrent"] = [float(v) for v in value]
        elif cmd == "SetAllTriggerLevels":
            if not isinstance(value, list) or len(value) != N_DETECTORS:
                self._send("TriggerLevelError", f"expected {N_DETECTORS} trigger levels (mV)")
                return
            self.state["TriggerLevel"] = [float(v) for v in value]
        elif cmd == "DetectorEnable":
            if not isinstance(value, bool):
                self._send("DetectorEnableError", "expected true or false")
                return
            self.state["DetectorEnable"] = value
        elif cmd == "SetMeasurementPeriod":
            if not isinstance(value, int) or value < 10:
                self._send("MeasurementPeriodError", "period must be an integer >= 10 ms")
                return
            self.state["MeasurementPeriod"] = value
        else:
            self._send("CommandError", f"unknown command {cmd!r}")
            return
        self._couple()
        self._send(obj.get("label", cmd), value)

    # -- counts port ---------------------------------------------------------------------------------------
    def counts_line(self) -> bytes:
        period = self.state["MeasurementPeriod"] / 1e3
        counts = [0] * N_DETECTORS
        if self.lab is not None and self.name in self.lab.detectors:
            r = self.lab.expected_rates()["singles_hz"][self.name]
            counts[self.index] = int(round(r * period))
        return (f"{time.time():.3f}," + ",".join(map(str, counts)) + "\n").encode()

    def counts_link(self) -> Any:
        dev = self

        class _Counts(DeviceSimulator):
            def connect(self) -> None:
                pass

            def read_due(self) -> bytes:
                return dev.counts_line()

            def wait_for_output(self, timeout_s: float) -> bool:
                return True

        from qlab.transport.simlink import SimLinkTransport

        return SimLinkTransport(self.name + ".counts", _Counts(None, self.name + ".counts"))

    def serve_second_port(self, port: int, stop: threading.Event) -> None:
        from qlab.sim.serve import serve_clients

        serve_clients(port, stop, self._stream_counts)

    def _stream_counts(self, conn: socket.socket, stop: threading.Event) -> None:
        with conn:
            while not stop.is_set():
                try:
                    conn.sendall(self.counts_line())
                except OSError:
                    return
                time.sleep(self.state["MeasurementPeriod"] / 1e3)


EosSNSPD.simulator_class = EosSimulator
