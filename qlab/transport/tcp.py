"""Plain TCP socket transport (DLC pro command line, Eos JSON, SCPI sockets)."""

from __future__ import annotations

import socket
import time

from qlab.errors import InstrumentDisconnected, InstrumentError
from qlab.transport.base import BufferedTransport


class TcpTransport(BufferedTransport):
    def __init__(self, name: str, host: str, port: int, **kw):
        super().__init__(name, **kw)
        try:
            self.sock = socket.create_connection((host, port), timeout=self.timeout_s)
        except OSError as exc:
            raise InstrumentError(name, f"cannot connect to {host}:{port}: {exc}") from None
        self.sock.settimeout(0.05)

    def _write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                chunk = None
            if chunk == b"":
                raise InstrumentDisconnected(self.name, "connection closed by the device")
            if chunk:
                self._buf += chunk
                return
            if time.monotonic() > deadline:
                raise self.timeout_error(what)

    def close(self) -> None:
        self.sock.close()


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, default_port
    return host, int(port)
