"""Simulated ID Quantique ID1000 Time Controller: the SCPI control protocol and the timestamp stream,
coupled to the simulated lab (in process, or over ZeroMQ under `qlab sim serve id1000 --tcp PORT`)."""

from __future__ import annotations

import contextlib
import re
import threading
import zlib
from typing import Any

import numpy as np
from qlab.drivers.idquantique.id1000 import (
    DELAY_RANGE_PS,
    ID1000,
    INTEGRATION_RANGE_MS,
    N_INPUTS,
    THRESHOLD_RANGE_V,
    encode_stream,
)

from qlab.sim.faults import FaultInjectable, lost_chunk


def build_simulated(name: str, sim: Any, limits: Any, cfg: Any, options: dict) -> ID1000:
    """An ID1000 driver whose control messages and data stream reach a simulator coupled to ``sim``."""
    from qlab.transport.message import SimMessageTransport

    dev = ID1000Simulator(sim, name, options)
    sim.device_sims[name] = dev
    transport = SimMessageTransport(name, dev, timeout_s=cfg.timeout_s, read_termination=ID1000.read_termination)
    return ID1000(name, transport=transport, limits=limits, clock=sim.clock, options=options, data_link=dev)


_NODE = {  # long/short SCPI forms -> canonical short form
    "INPUT": "INPU", "INPU": "INPU", "ENABLE": "ENAB", "ENAB": "ENAB", "THRESHOLD": "THRE", "THRE": "THRE",
    "EDGE": "EDGE", "COUPLING": "COUP", "COUP": "COUP", "COUNTER": "COUN", "COUN": "COUN", "MODE": "MODE",
    "INTEGRATION": "INTE", "INTE": "INTE", "DELAY": "DELA", "DELA": "DELA", "VALUE": "VALU", "VALU": "VALU",
    "RAW": "RAW", "SEND": "SEND", "DEVICE": "DEVI", "DEVI": "DEVI", "RESOLUTION": "RES", "RES": "RES",
}


class _Refused(Exception):
    pass


class ID1000Simulator(FaultInjectable):
    """The Time Controller's control protocol and data stream, coupled to the simulated lab. Faults
    (qlab.sim.faults) act on both: control replies and the timestamp stream."""

    model_id = "id1000"

    def __init__(self, lab: Any, name: str, options: dict | None = None):
        self.lab, self.name = lab, name
        self.serial = f"SIM{zlib.crc32(name.encode()) % 100000:05d}"
        self.inputs = {n: {"ENAB": False, "THRE": 0.5, "EDGE": "RISING", "COUP": "DC", "MODE": "CYCL",
                           "INTE": 1000, "RAW": False, "DELA": 0} for n in range(1, N_INPUTS + 1)}
        self._rng = np.random.default_rng(zlib.crc32(name.encode()) + (lab.seed if lab is not None else 0))
        self._lock = threading.Lock()
        self._streaming = False
        self._init_faults(lab.clock.now if lab is not None else __import__("time").monotonic, name)

    # -- control ------------------------------------------------------------------------------------------
    def request(self, message: bytes) -> bytes | None:
        self.check_link()
        fault = self.active_fault()
        if fault == "silent":
            return None
        if fault == "device-error":
            return b"ERROR: device fault (simulated)"
        reply = self._request(message)
        if fault == "garbage":
            return self.faults.garble(reply or b"?")
        return self.faults.truncate(reply) if fault == "truncated" else reply

    def _request(self, message: bytes) -> bytes:
        text = message.decode("ascii", "replace").strip()
        replies: list[str] = []
        path = ""
        with self._lock:
            for part in filter(None, (p.strip() for p in text.split(";"))):
                header, _, arg = part.partition(" ")
                if header.startswith(":"):
                    header = header[1:]
                elif path and not header.startswith("*"):
                    header = f"{path}:{header}"
                path = header.rpartition(":")[0]
                try:
                    reply = self._execute(header.upper(), arg.strip())
                except _Refused as exc:
                    return f"ERROR: {exc}".encode()
                if reply is not None:
                    replies.append(reply)
        return ";".join(replies).encode()

    def _execute(self, header: str, arg: str) -> str | None:
        if header == "*IDN?":
            return f"ID Quantique,ID1000,{self.serial},7.2 (simulated)"
        query = header.endswith("?")
        nodes = []
        for raw in header.rstrip("?").split(":"):
            m = re.fullmatch(r"([A-Z]+)(\d*)", raw)
            if m is None or m.group(1) not in _NODE:
                raise _Refused(f"Undefined header {header}")
            nodes.append((_NODE[m.group(1)], int(m.group(2)) if m.group(2) else None))
        names = [n for n, _ in nodes]
        if names == ["DEVI", "RES"] and query:
            return "1ps"
        n = nodes[0][1] or 1
        if n not in self.inputs:
            raise _Refused(f"No such channel {n}")
        state = self.inputs[n]
        key = {("INPU", "ENAB"): "ENAB", ("INPU", "THRE"): "THRE", ("INPU", "EDGE"): "EDGE",
               ("INPU", "COUP"): "COUP", ("INPU", "COUN", "MODE"): "MODE", ("INPU", "COUN", "INTE"): "INTE",
               ("INPU", "INTE"): "INTE", ("DELA", "VALU"): "DELA", ("RAW", "SEND"): "RAW"}.get(tuple(names))
        if names == ["INPU", "COUN"] and query:
            return str(self._count(n))
        if key is None:
            raise _Refused(f"Undefined header {header}")
        if query:
            v = state[key]
            if key in ("ENAB", "RAW"):
                return "ON" if v else "OFF"
            return f"{v:.3f}V" if key == "THRE" else str(v)
        self._set(n, key, arg)
        return None

    def _set(self, n: int, key: str, arg: str) -> None:
        state = self.inputs[n]
        try:
            if key in ("ENAB", "RAW"):
                if arg.upper() not in ("ON", "OFF", "1", "0"):
                    raise ValueError
                state[key] = arg.upper() in ("ON", "1")
            elif key == "THRE":
                v = float(re.sub(r"(?i)v$", "", arg))
                if not THRESHOLD_RANGE_V[0] <= v <= THRESHOLD_RANGE_V[1]:
                    raise _Refused(f"Threshold {v} V out of range {THRESHOLD_RANGE_V}")
                state[key] = v
            elif key == "DELA":
                v = int(float(arg))
                if not DELAY_RANGE_PS[0] <= v <= DELAY_RANGE_PS[1]:
                    raise _Refused(f"Delay {v} ps out of range {DELAY_RANGE_PS}")
                state[key] = v
            elif key == "INTE":
                v = int(float(arg))
                if not INTEGRATION_RANGE_MS[0] <= v <= INTEGRATION_RANGE_MS[1]:
                    raise _Refused(f"Integration time {v} ms out of range")
                state[key] = v
            elif key == "EDGE":
                if arg.upper() not in ("RISING", "FALLING"):
                    raise ValueError
                state[key] = arg.upper()
            elif key == "COUP":
                if arg.upper() not in ("AC", "DC"):
                    raise ValueError
                state[key] = arg.upper()
            elif key == "MODE":
                if arg.upper() not in ("CYCL", "CYCLE", "ACCU", "ACCUMULATE"):
                    raise ValueError
                state[key] = arg.upper()[:4]
        except ValueError:
            raise _Refused(f"Invalid parameter {arg!r}") from None
        if self.lab is not None and key in ("THRE", "DELA"):
            self.lab.set_tagger_input(self.name, n, **({"trigger_v": state["THRE"]} if key == "THRE"
                                                        else {"delay_ps": state["DELA"]}))
        if key == "RAW":
            self._update_stream()

    def _count(self, n: int) -> int:
        """One counter cycle: the expected click rate of what is wired to input n, dead time included."""
        if self.lab is None or not self.inputs[n]["ENAB"]:
            return 0
        rates = self.lab.expected_rates()["singles_hz"]
        rate = 0.0
        for det in self.lab.detectors.values():
            if det.tagger == self.name and det.input == n and det.live:
                r = rates[det.name]
                rate += r / (1 + r * det.p.dead_time_ns * 1e-9)
        return int(self._rng.poisson(rate * self.inputs[n]["INTE"] / 1000))

    # -- data stream --------------------------------------------------------------------------------------
    def _update_stream(self) -> None:
        want = self.lab is not None and any(s["RAW"] for s in self.inputs.values())
        if want and not self._streaming:
            self.lab.start_stream(self.name)
        elif not want and self._streaming:
            self.lab.stop_stream(self.name)
        self._streaming = want

    def receive_all(self, wait_s: float = 0.0) -> list[list[bytes]]:
        """Data-port messages since the previous call (what the host's PULL socket would deliver)."""
        self.check_link()
        fault = self.active_fault()
        with self._lock:
            if not self._streaming or fault in ("silent", "device-error"):  # a faulted device stops streaming
                return []
            chunk = self.lab.read_tags(self.name)
            sending = [n for n, s in self.inputs.items() if s["RAW"] and s["ENAB"]]
        if chunk.t_stop_ps <= chunk.t_start_ps:
            return []
        if fault == "overflow":
            chunk = lost_chunk(chunk)
        messages = encode_stream(chunk, sending)
        if fault == "garbage":
            return [[self.faults.garble(h), self.faults.garble(b)] for h, b in messages]
        if fault == "truncated":
            return [[h, self.faults.truncate(b)] for h, b in messages]
        return messages

    def serve_tcp(self, port: int, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Serve the control protocol (REP) on 127.0.0.1:port and the data stream (PUSH) on port + 1."""
        import zmq

        ctx = zmq.Context.instance()
        rep, push = ctx.socket(zmq.REP), ctx.socket(zmq.PUSH)
        for s in (rep, push):
            s.setsockopt(zmq.LINGER, 0)
        rep.bind(f"tcp://127.0.0.1:{port}")
        push.bind(f"tcp://127.0.0.1:{port + 1}")
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set():
                if self.active_fault() == "disconnect":
                    break  # the device is gone: both sockets close
                if rep.poll(20, zmq.POLLIN):
                    reply = self.request(rep.recv())
                    if reply is None:  # silent: a REP socket must answer before the next request; it never does
                        while not stop.is_set() and self.active_fault() == "silent":
                            stop.wait(0.05)
                        continue
                    rep.send(reply)
                for msg in self.receive_all():
                    # Nobody reading (or the host's queue is full): the data are lost, as on hardware. A
                    # blocking send would stall the control loop, and a host restarted after kill -9 could
                    # not even identify the device.
                    with contextlib.suppress(zmq.Again):
                        push.send_multipart(msg, zmq.NOBLOCK)
        finally:
            rep.close(0)
            push.close(0)
