"""Simulated Single Quantum Eos: the JSON control protocol, bias-current coupling to the simulated detector,
and the counts port (in process, or on PORT + 1 under `qlab sim serve eos --tcp PORT`)."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from typing import Any

from qlab.drivers.singlequantum.eos import N_DETECTORS, SEP, SWITCHING_UA, EosSNSPD

from qlab.sim.device import DeviceSimulator, sim_link


def build_simulated(name: str, sim: Any, limits: Any, cfg: Any, options: dict) -> EosSNSPD:
    """An Eos driver on a simulator coupled to ``sim``, its counts port included."""
    dev = EosSimulator(sim, name, options)
    sim.device_sims[name] = dev
    return EosSNSPD(name, transport=sim_link(EosSNSPD, name, dev, cfg.timeout_s), limits=limits, clock=sim.clock,
                    options=options, counts_transport=dev.counts_link())


class EosSimulator(DeviceSimulator):
    model_id = "eos"
    frame_end = SEP

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
        if self.device_error_active:
            self._send("SystemError", "detector system fault (simulated)")
            return
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
                dev.check_link()
                fault = dev.faults.active()
                if fault == "silent":
                    return b""
                line = dev.counts_line()
                if fault == "garbage":
                    return dev.faults.garble(line, b"\n")
                return dev.faults.truncate(line) if fault == "truncated" else line

            def wait_for_output(self, timeout_s: float) -> bool:
                return dev.faults.active() != "silent"

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
