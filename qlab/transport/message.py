"""Message-framed request/reply transports (ZeroMQ REQ/REP devices such as the ID Quantique ID1000).

On these links the framing is the message itself: one written message is one request and each reply
message reads back as one line, so drivers keep using ``query_line``. ``read_termination`` stands for the
message boundary and never travels on the wire.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Protocol

from qlab.errors import InstrumentDisconnected
from qlab.transport.base import BufferedTransport


class MessageTransport(BufferedTransport):
    @abstractmethod
    def _send_message(self, data: bytes) -> None: ...

    @abstractmethod
    def _recv_message(self, timeout_s: float) -> bytes | None:
        """The next reply message, or None if none arrived within ``timeout_s``."""

    def _write(self, data: bytes) -> None:
        self._send_message(data)

    def _fill(self, timeout_s: float, what: str) -> None:
        msg = self._recv_message(timeout_s)
        if msg is None:
            raise self.timeout_error(f"{what}, got {bytes(self._buf)!r}")
        self._buf += msg + self.read_termination

    def drain(self) -> bytes:
        with self.lock:
            stale = bytes(self._buf)
            self._buf.clear()
            return stale


class MessageDevice(Protocol):
    def request(self, message: bytes) -> bytes | None:
        """Handle one request; the reply message, or None for a device that stays silent."""


class SimMessageTransport(MessageTransport):
    """In-process link to a simulated message device: the driver's exact request strings reach its parser."""

    def __init__(self, name: str, device: MessageDevice, **kw):
        super().__init__(name, **kw)
        self.device = device
        self._replies: list[bytes] = []

    def _send_message(self, data: bytes) -> None:
        try:
            reply = self.device.request(data)
        except ConnectionError as exc:  # the simulated device dropped the link (fault injection)
            raise InstrumentDisconnected(self.name, f"link lost: {exc}") from None
        if reply is not None:
            self._replies.append(reply)

    def _recv_message(self, timeout_s: float) -> bytes | None:
        return self._replies.pop(0) if self._replies else None
