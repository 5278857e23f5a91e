"""Thin byte transport: timeouts, terminators and a lock so a query and its reply stay together."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

from qlab.errors import InstrumentTimeout


class Transport(ABC):
    """Bytes to and from one device. Drivers are written once against this interface.

    ``lock`` is held for a whole ``query`` (write + read); callers doing multi-step exchanges take it
    themselves (``with transport.lock:``).
    """

    def __init__(self, name: str, timeout_s: float = 2.0, write_termination: bytes = b"",
                 read_termination: bytes = b"\n"):
        self.name = name
        self.timeout_s = timeout_s
        self.write_termination = write_termination
        self.read_termination = read_termination
        self.lock = threading.RLock()
        self.log: list[tuple[str, bytes]] | None = None  # set to a list to record traffic (tests, debugging)

    # -- primitives --------------------------------------------------------------------------------------
    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    def _read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        """Bytes up to and including ``terminator``; raise InstrumentTimeout if it does not arrive."""

    @abstractmethod
    def _read_exact(self, n: int, timeout_s: float) -> bytes: ...

    def close(self) -> None:  # noqa: B027 - optional
        pass

    def drain(self) -> bytes:
        """Discard input that is already waiting (stale replies after a device error). Returns it."""
        return b""

    # -- public ------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        with self.lock:
            data = data + self.write_termination
            if self.log is not None:
                self.log.append(("w", data))
            self._write(data)

    def read_until(self, terminator: bytes | None = None, timeout_s: float | None = None) -> bytes:
        with self.lock:
            data = self._read_until(terminator or self.read_termination,
                                    self.timeout_s if timeout_s is None else timeout_s)
            if self.log is not None:
                self.log.append(("r", data))
            return data

    def read_exact(self, n: int, timeout_s: float | None = None) -> bytes:
        with self.lock:
            data = self._read_exact(n, self.timeout_s if timeout_s is None else timeout_s)
            if self.log is not None:
                self.log.append(("r", data))
            return data

    def query(self, data: bytes, terminator: bytes | None = None) -> bytes:
        with self.lock:
            self.write(data)
            return self.read_until(terminator)

    # -- text helpers ------------------------------------------------------------------------------------
    def write_line(self, text: str) -> None:
        self.write(text.encode("ascii"))

    def read_line(self) -> str:
        return self.read_until().decode("ascii", errors="replace").rstrip("\r\n")

    def query_line(self, text: str) -> str:
        with self.lock:
            self.write_line(text)
            return self.read_line()

    def timeout_error(self, what: str) -> InstrumentTimeout:
        return InstrumentTimeout(self.name, f"no answer within {self.timeout_s:g} s ({what})")


class BufferedTransport(Transport):
    """A transport that gathers input in a buffer: subclasses only say how to ``_fill`` it."""

    def __init__(self, name: str, **kw):
        super().__init__(name, **kw)
        self._buf = bytearray()

    @abstractmethod
    def _fill(self, timeout_s: float, what: str) -> None:
        """Append what arrives within ``timeout_s`` to ``self._buf``; raise InstrumentTimeout if nothing does."""

    def _read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        while (i := self._buf.find(terminator)) < 0:
            self._fill(timeout_s, f"waiting for {terminator!r}")
        out = bytes(self._buf[: i + len(terminator)])
        del self._buf[: i + len(terminator)]
        return out

    def _read_exact(self, n: int, timeout_s: float) -> bytes:
        while len(self._buf) < n:
            self._fill(timeout_s, f"waiting for {n} bytes")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out
