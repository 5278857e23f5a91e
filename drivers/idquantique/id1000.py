"""ID Quantique ID1000 (and ID900) Time Controller: SCPI text over ZeroMQ REQ/REP, tcp 5555.

Control: one request string, one reply string (empty for settings); commands chain with ``;`` and, as in
SCPI, a chained command without a leading ``:`` keeps the previous command's path
(``INPU1:ENAB ON;THRE 0.5V`` sets INPU1:THRE). A refused command answers ``ERROR: <reason>``.

Timestamps: with ``RAW<n>:SEND ON`` each enabled input's tags stream to the host as little-endian uint64
picoseconds. qlab receives them on a ZeroMQ PULL socket at the control port + 1 (``data_port`` option) as
two-frame messages ``[b"<n>", uint64[]]``, plus ``[b"O", uint64 pairs]`` for intervals lost to overflow
and ``[b"T", uint64 start, uint64 stop]`` marking the tagger-time interval that every input has completed
— channels arrive separately, so tags are merged only up to that mark. The control commands follow the
protocol facts; the data-stream framing is qlab's reading of IDQ's host-side streaming service and must be
validated on hardware (`pytest tests/test_hardware.py --hardware id1000=HOST`).

Config block::

    tagger_alice:
      driver: idquantique.id1000
      backend: 192.168.1.40          # or host:port, or sim
      settings: {trigger_levels_v: {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5}}
"""

from __future__ import annotations

import re
import threading
import zlib
from typing import Any

import numpy as np

from qlab.errors import InstrumentError, ProtocolError
from qlab.instruments.tagger import TimeTagger
from qlab.types import TagChunk

N_INPUTS = 4
THRESHOLD_RANGE_V = (-2.0, 2.0)
DELAY_RANGE_PS = (0, 100_000_000)  # 0 to 100 µs
INTEGRATION_RANGE_MS = (1, 1_000_000)


# -- data stream framing ---------------------------------------------------------------------------------------
def encode_stream(chunk: TagChunk, inputs: list[int]) -> list[list[bytes]]:
    """The data-port messages for one completed interval of ``chunk``, for the given inputs."""
    out = []
    for n in inputs:
        ts = chunk.timestamps[chunk.channels == n]
        out.append([str(n).encode(), ts.astype("<i8").tobytes()])  # same bytes as uint64 for t >= 0
    if len(chunk.gaps):
        out.append([b"O", np.asarray(chunk.gaps, "<i8").tobytes()])
    out.append([b"T", np.array([chunk.t_start_ps, chunk.t_stop_ps], "<i8").tobytes()])
    return out


class StreamAssembler:
    """Collects per-input tag messages and releases time-ordered chunks at each completion mark."""

    def __init__(self) -> None:
        self._ts: list[np.ndarray] = []
        self._ch: list[np.ndarray] = []
        self._gaps: list[np.ndarray] = []

    def feed(self, messages: list[list[bytes]]) -> list[TagChunk]:
        done: list[TagChunk] = []
        for msg in messages:
            if len(msg) != 2:
                raise ValueError(f"data message with {len(msg)} frames")
            head, body = msg
            values = np.frombuffer(body, "<u8").view(np.int64)
            if head == b"T":
                if values.size != 2:
                    raise ValueError("completion mark without start and stop")
                done.append(self._release(int(values[0]), int(values[1])))
            elif head == b"O":
                self._gaps.append(values.reshape(-1, 2))
            else:
                self._ts.append(values)
                self._ch.append(np.full(values.size, int(head), np.int16))
        return done

    def _release(self, t_start: int, t_stop: int) -> TagChunk:
        ts = np.concatenate(self._ts) if self._ts else np.zeros(0, np.int64)
        ch = np.concatenate(self._ch) if self._ch else np.zeros(0, np.int16)
        order = np.argsort(ts, kind="stable")  # merge of per-input sorted runs
        gaps = np.concatenate(self._gaps) if self._gaps else np.zeros((0, 2), np.int64)
        self._ts, self._ch, self._gaps = [], [], []
        return TagChunk(ts[order], ch[order], t_start, t_stop, gaps)


# -- driver ----------------------------------------------------------------------------------------------------
class ID1000(TimeTagger):
    model = "ID Quantique ID1000"
    transport_kind = "zmq"
    default_port = 5555
    write_termination = b""
    read_termination = b"\n"

    def __init__(self, *args: Any, data_link: Any = None, **kw: Any):
        super().__init__(*args, **kw)
        self._data = data_link
        self._assembler = StreamAssembler()
        self._streaming: list[int] = []

    @classmethod
    def simulated(cls, name: str, sim: Any, limits: Any, cfg: Any, options: dict) -> ID1000:
        from qlab.transport.message import SimMessageTransport

        dev = ID1000Simulator(sim, name, options)
        sim.device_sims[name] = dev
        transport = SimMessageTransport(name, dev, timeout_s=cfg.timeout_s, read_termination=cls.read_termination)
        return cls(name, transport=transport, limits=limits, clock=sim.clock, options=options, data_link=dev)

    # -- protocol helpers ----------------------------------------------------------------------------------
    def command(self, text: str) -> str:
        """Send one request and return its reply; an ``ERROR`` reply raises."""
        reply = self.transport.query_line(text).strip()
        if reply.upper().startswith("ERROR"):
            raise InstrumentError(self.name, f"{text!r} refused: {reply}")
        return reply

    def _number(self, text: str, unit: str = "") -> float:
        reply = self.command(text)
        m = re.fullmatch(rf"\s*([-+0-9.eE]+)\s*{unit}\s*", reply, re.IGNORECASE)
        if m is None:
            raise ProtocolError(self.name, f"{text} answered {reply!r}")
        return float(m.group(1))

    def _data_address(self) -> tuple[str, int]:
        from qlab.transport.tcp import parse_host_port

        backend = str(self.options.get("backend", "")).removeprefix("tcp://")
        host, port = parse_host_port(backend, self.default_port)
        return host, int(self.options.get("data_port") or port + 1)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._idn = self.command("*IDN?")
        if "ID1000" not in self._idn and "ID900" not in self._idn:
            raise ProtocolError(self.name, f"*IDN? answered {self._idn!r}: not an ID Quantique Time Controller")
        if self._data is None:
            from qlab.transport.zmq_link import ZmqStreamReceiver

            self._data = ZmqStreamReceiver(self.name, *self._data_address())

    def _close(self) -> None:
        try:
            self.stop_stream()
        finally:
            self._streaming = []
            close = getattr(self._data, "close", None)
            if close is not None:
                close()

    def identify(self) -> str:
        return self._idn

    def channels(self) -> list[int]:
        return list(range(1, N_INPUTS + 1))

    # -- settings -----------------------------------------------------------------------------------------
    def _set_delay(self, channel: int, delay_ps: int) -> None:
        self.command(f"DELA{channel}:VALU {int(delay_ps)}")

    def delay(self, channel: int) -> int:
        return int(self._number(f"DELA{channel}:VALU?", "(?:ps)?"))

    def _set_trigger_level(self, channel: int, level_v: float) -> None:
        self.command(f"INPU{channel}:THRE {level_v:.3f}V")

    def trigger_level(self, channel: int) -> float:
        return self._number(f"INPU{channel}:THRE?", "V?")

    def set_input_enabled(self, channel: int, enabled: bool) -> None:
        self._require_open()
        self._check_channel(channel)
        self.command(f"INPU{channel}:ENAB {'ON' if enabled else 'OFF'}")

    def counts(self, channel: int, integration_s: float) -> int:
        """Clicks the device's own counter saw on ``channel`` in one cycle of ``integration_s`` seconds."""
        self._require_open()
        self._check_channel(channel)
        ms = int(round(integration_s * 1000))
        self.command(f"INPU{channel}:COUN:MODE CYCL;INTE {ms}")
        self.clock.sleep(2 * integration_s)  # the cycle running at the change may have started earlier
        return int(self._number(f"INPU{channel}:COUN?"))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        snap = super().snapshot()
        for ch in self.channels():
            snap[f"enabled_ch{ch}"] = {"value": self.command(f"INPU{ch}:ENAB?").upper() in ("ON", "1"),
                                       "unit": ""}
        return snap

    # -- streaming ----------------------------------------------------------------------------------------
    def start_stream(self, channels: list[int] | None = None) -> None:
        self._require_open()
        self.stop_stream()
        # What the previous session still had in flight must not be merged into this one.
        self._data.receive_all(wait_s=0.05)
        self._assembler = StreamAssembler()
        self._streaming = list(channels or self.channels())
        for ch in self._streaming:
            self.command(f"INPU{ch}:ENAB ON;:RAW{ch}:SEND ON")

    def stop_stream(self) -> None:
        for ch in self._streaming:
            self.command(f"RAW{ch}:SEND OFF")
        self._streaming = []

    def read_chunk(self) -> TagChunk:
        self._require_open()
        if not self._streaming:
            self.start_stream()
        try:
            chunks = self._assembler.feed(self._data.receive_all())
        except ValueError as exc:
            raise ProtocolError(self.name, f"timestamp stream: {exc}") from None
        if not chunks:
            return TagChunk(np.zeros(0, np.int64), np.zeros(0, np.int16), 0, 0)
        return TagChunk.concatenate(chunks)


# -- simulator -------------------------------------------------------------------------------------------------
_NODE = {  # long/short SCPI forms -> canonical short form
    "INPUT": "INPU", "INPU": "INPU", "ENABLE": "ENAB", "ENAB": "ENAB", "THRESHOLD": "THRE", "THRE": "THRE",
    "EDGE": "EDGE", "COUPLING": "COUP", "COUP": "COUP", "COUNTER": "COUN", "COUN": "COUN", "MODE": "MODE",
    "INTEGRATION": "INTE", "INTE": "INTE", "DELAY": "DELA", "DELA": "DELA", "VALUE": "VALU", "VALU": "VALU",
    "RAW": "RAW", "SEND": "SEND", "DEVICE": "DEVI", "DEVI": "DEVI", "RESOLUTION": "RES", "RES": "RES",
}


class _Refused(Exception):
    pass


class ID1000Simulator:
    """The Time Controller's control protocol and data stream, coupled to the simulated lab."""

    model_id = "id1000"

    def __init__(self, lab: Any, name: str, options: dict | None = None):
        self.lab, self.name = lab, name
        self.serial = f"SIM{zlib.crc32(name.encode()) % 100000:05d}"
        self.inputs = {n: {"ENAB": False, "THRE": 0.5, "EDGE": "RISING", "COUP": "DC", "MODE": "CYCL",
                           "INTE": 1000, "RAW": False, "DELA": 0} for n in range(1, N_INPUTS + 1)}
        self._rng = np.random.default_rng(zlib.crc32(name.encode()) + (lab.seed if lab is not None else 0))
        self._lock = threading.Lock()
        self._streaming = False

    # -- control ------------------------------------------------------------------------------------------
    def request(self, message: bytes) -> bytes:
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
        with self._lock:
            if not self._streaming:
                return []
            chunk = self.lab.read_tags(self.name)
            sending = [n for n, s in self.inputs.items() if s["RAW"] and s["ENAB"]]
        if chunk.t_stop_ps <= chunk.t_start_ps:
            return []
        return encode_stream(chunk, sending)

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
                if rep.poll(20, zmq.POLLIN):
                    rep.send(self.request(rep.recv()))
                for msg in self.receive_all():
                    push.send_multipart(msg)
        finally:
            rep.close(0)
            push.close(0)


ID1000.simulator_class = ID1000Simulator  # for `qlab sim serve id1000 --tcp PORT` (serve_tcp)
