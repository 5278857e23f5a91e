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
from typing import Any

import numpy as np
from qlab.drivers.guard import StreamWatch, parse_errors

from qlab.errors import InstrumentDisconnected, InstrumentError, InstrumentTimeout, ProtocolError
from qlab.instruments.tagger import TimeTagger
from qlab.types import Identification, TagChunk

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
        """Take data-port messages; return the chunks completed by their marks (tags in int64 ps). Raises ValueError
        for a malformed message."""
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
                channel = int(head)
                if not 1 <= channel <= N_INPUTS:
                    raise ValueError(f"data message for input {channel}; the device has 1-{N_INPUTS}")
                if values.size > 1 and np.any(np.diff(values) < 0):
                    raise ValueError(f"input {channel}: timestamps out of order")
                self._ts.append(values)
                self._ch.append(np.full(values.size, channel, np.int16))
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
    stream_stall_s = 2.0  # no completion mark for this long (device clock): the device stopped streaming

    def __init__(self, *args: Any, data_link: Any = None, **kw: Any):
        super().__init__(*args, **kw)
        self._data = data_link
        self._assembler = StreamAssembler()
        self._streaming: list[int] = []
        self._watch = StreamWatch(self.name, self.clock, self.stream_stall_s)

    # -- protocol helpers ----------------------------------------------------------------------------------
    def command(self, text: str) -> str:
        """Send one request and return its reply. Raises InstrumentError for an ``ERROR`` reply, ProtocolError on a
        malformed reply, InstrumentTimeout if the device does not answer."""
        reply = self.transport.query_line(text).strip()
        if reply.upper().startswith("ERROR"):
            raise InstrumentError(self.name, f"{text!r} refused: {reply}")
        return reply

    def _number(self, text: str, unit: str = "") -> float:
        reply = self.command(text)
        m = re.fullmatch(rf"\s*([-+0-9.eE]+)\s*{unit}\s*", reply, re.IGNORECASE)
        if m is None:
            raise ProtocolError(self.name, f"{text} answered {reply!r}")
        with parse_errors(self.name, f"{text} answered {reply!r}"):
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

    def identify(self) -> Identification:
        """The ``*IDN?`` reply read when opened."""
        return Identification.from_idn(self._idn)

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
        """Enable or disable input ``channel``. Raises InstrumentError for an unknown channel, a closed instrument or
        a refusal, ProtocolError on a malformed reply, InstrumentTimeout if the device does not answer."""
        self._require_open()
        self._check_channel(channel)
        self.command(f"INPU{channel}:ENAB {'ON' if enabled else 'OFF'}")

    def counts(self, channel: int, integration_s: float) -> int:
        """Clicks the device's own counter saw on ``channel`` in one cycle of ``integration_s`` seconds (takes 2 ×
        integration_s). Raises InstrumentError for an unknown channel, a closed instrument or a refusal, ProtocolError
        on a malformed reply, InstrumentTimeout if the device does not answer."""
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
        self._watch.reset()

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
        except (ValueError, OverflowError, TypeError) as exc:
            raise ProtocolError(self.name, f"timestamp stream: {exc}") from None
        except ConnectionError as exc:
            raise InstrumentDisconnected(self.name, f"timestamp stream: {exc}") from None
        try:
            self._watch.update(bool(chunks))
        except InstrumentTimeout:
            self.command("*IDN?")  # a device that reports an error says so (InstrumentError); a silent one times out
            raise
        if not chunks:
            return TagChunk(np.zeros(0, np.int64), np.zeros(0, np.int16), 0, 0)
        return TagChunk.concatenate(chunks)
