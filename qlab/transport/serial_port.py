"""pyserial transport: real ports, socket:// and any URL handler registered with pyserial (the simulation
registers qlabsim:// when a simulated lab or simulated instrument is built)."""

from __future__ import annotations

import time

import serial

from qlab.errors import InstrumentError
from qlab.transport.base import Transport


class SerialTransport(Transport):
    def __init__(self, name: str, url: str, baudrate: int = 9600, rtscts: bool = False, **kw):
        super().__init__(name, **kw)
        try:
            self.port = serial.serial_for_url(url, baudrate=baudrate, rtscts=rtscts, timeout=0.05)
        except (serial.SerialException, ValueError) as exc:
            raise InstrumentError(name, f"cannot open serial port {url!r}: {exc}") from None

    def _write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def _read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        buf = bytearray()
        deadline = time.monotonic() + timeout_s
        while not buf.endswith(terminator):
            chunk = self.port.read(1)
            if chunk:
                buf += chunk
            elif time.monotonic() > deadline:
                raise self.timeout_error(f"waiting for {terminator!r}, got {bytes(buf)!r}")
        return bytes(buf)

    def _read_exact(self, n: int, timeout_s: float) -> bytes:
        buf = bytearray()
        deadline = time.monotonic() + timeout_s
        while len(buf) < n:
            chunk = self.port.read(n - len(buf))
            if chunk:
                buf += chunk
            elif time.monotonic() > deadline:
                raise self.timeout_error(f"waiting for {n} bytes, got {bytes(buf)!r}")
        return bytes(buf)

    def drain(self) -> bytes:
        with self.lock:
            n = self.port.in_waiting
            return self.port.read(n) if n else b""

    def close(self) -> None:
        self.port.close()
