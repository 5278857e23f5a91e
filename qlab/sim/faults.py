"""Fault injection for simulated instruments: what can go wrong on the wire or in a vendor library, on demand.

A ``FaultPlan`` belongs to one simulated device (a wire-protocol ``DeviceSimulator`` or an API-level simulated
SDK). Tests call ``device.inject(kind, after_s)``; ``qlab sim serve MODEL --fault KIND@SECONDS`` arms it to
start that many seconds after the first client connects. Times are on the device's clock (simulated seconds in
a fast simulated lab, wall seconds in a real-time one).

Kinds:

- ``silent``: the device stops answering (requests are swallowed; streams stop advancing).
- ``disconnect``: the link drops (the in-process link raises InstrumentDisconnected, a served device closes
  the socket, a simulated SDK raises its disconnect error).
- ``garbage``: each reply is replaced by random bytes (seeded, same length, frame terminator kept so the driver
  reads a complete but meaningless reply).
- ``truncated``: each reply is cut to its first half and the rest never comes.
- ``device-error``: the device reports an error in its own protocol (SCPI error queue, ELL14 GS status, APT
  HW_RESPONSE, DeCoF ``Error:``, Eos JSON error label, ID1000 ``ERROR``, SDK error codes / exceptions).
- ``overflow``: taggers lose data and report it by their own means (overflow events, gaps, FIFO-full flag).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable


class LinkDropped(ConnectionError):
    """Raised by a simulated device whose link a ``disconnect`` fault has dropped (the in-process link turns it
    into InstrumentDisconnected; a server closes the client's socket)."""


FAULT_KINDS = ("silent", "disconnect", "garbage", "truncated", "device-error", "overflow")


def parse_fault(text: str) -> tuple[str, float | None]:
    """``KIND[@SECONDS]`` -> (kind, seconds or None). ValueError naming the known kinds for anything else."""
    kind, sep, when = text.strip().partition("@")
    kind = kind.strip().lower()
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
    if not sep:
        return kind, None
    try:
        seconds = float(when)
    except ValueError:
        raise ValueError(f"fault {text!r}: {when!r} is not a number of seconds") from None
    if not 0 <= seconds < 1e6:
        raise ValueError(f"fault {text!r}: the delay must be 0 to 1e6 seconds")
    return kind, seconds


class FaultPlan:
    """One pending or active fault of one device. Thread-safe; ``now`` is the device's clock in seconds.

    ``inject(kind, after_s=None)``: start at once, or ``after_s`` seconds from now; with ``from_connect=True``
    the delay counts from the first client connection (``connected()``), as ``qlab sim serve --fault`` does.
    """

    def __init__(self, now: Callable[[], float], seed: int = 0):
        self._now = now
        self._lock = threading.Lock()
        self.kind: str | None = None
        self._start: float | None = None
        self._after_connect: float | None = None
        self.rng = random.Random(seed)  # garbage bytes: seeded simulation randomness

    def inject(self, kind: str, after_s: float | None = None, from_connect: bool = False) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        with self._lock:
            self.kind = kind
            if from_connect:
                self._after_connect, self._start = after_s or 0.0, None
            else:
                self._after_connect, self._start = None, self._now() + (after_s or 0.0)

    def clear(self) -> None:
        with self._lock:
            self.kind, self._start, self._after_connect = None, None, None

    def connected(self) -> None:
        """A client connected: a fault armed relative to the first connection starts counting now."""
        with self._lock:
            if self._after_connect is not None and self._start is None:
                self._start = self._now() + self._after_connect

    def active(self) -> str | None:
        """The fault in effect now, or None."""
        with self._lock:
            if self.kind is None or self._start is None or self._now() < self._start:
                return None
            return self.kind

    # -- reply transformations -------------------------------------------------------------------------------
    def garble(self, data: bytes, keep_end: bytes = b"") -> bytes:
        """Random bytes of ``data``'s length; a trailing ``keep_end`` (the frame terminator) is kept, and the
        random part never contains the terminator's bytes, so the reader gets exactly one complete frame."""
        body_len = len(data) - len(keep_end) if keep_end and data.endswith(keep_end) else len(data)
        avoid = set(keep_end) if keep_end and data.endswith(keep_end) else set()
        pool = [b for b in range(256) if b not in avoid]
        body = bytes(self.rng.choice(pool) for _ in range(max(body_len, 1)))
        return body + (keep_end if avoid or (keep_end and data.endswith(keep_end)) else b"")

    @staticmethod
    def truncate(data: bytes) -> bytes:
        """The first half of ``data`` (at least nothing of its terminator survives for replies of 2+ bytes)."""
        return data[: len(data) // 2]


class FaultInjectable:
    """Fault injection for simulated devices that are not byte streams (simulated vendor SDKs, message devices):
    ``inject`` / ``clear_fault`` / ``active_fault`` / ``check_link`` with a ``FaultPlan`` on ``now``."""

    faults: FaultPlan

    def _init_faults(self, now: Callable[[], float], name: str) -> None:
        import zlib

        self.faults = FaultPlan(now, seed=zlib.crc32(name.encode()))

    def inject(self, kind: str, after_s: float | None = None, from_connect: bool = False) -> None:
        """Start fault ``kind`` now or ``after_s`` seconds of device clock from now. ValueError for an unknown kind."""
        self.faults.inject(kind, after_s, from_connect)

    def clear_fault(self) -> None:
        self.faults.clear()

    def active_fault(self) -> str | None:
        self.faults.connected()
        return self.faults.active()

    def check_link(self) -> None:
        """Raise LinkDropped while a ``disconnect`` fault is in effect."""
        if self.active_fault() == "disconnect":
            raise LinkDropped(f"{getattr(self, 'name', 'device')}: simulated disconnect")


def lost_chunk(chunk):  # noqa: ANN001, ANN201 - TagChunk in, TagChunk out (no import of qlab.types needed here)
    """``chunk`` as a tagger reports it after a buffer overflow: its tags lost, its whole interval a gap."""
    import numpy as np

    return type(chunk)(np.zeros(0, np.int64), np.zeros(0, np.int16), chunk.t_start_ps, chunk.t_stop_ps,
                       np.array([[chunk.t_start_ps, chunk.t_stop_ps]], np.int64), chunk.missed_events + len(chunk))
