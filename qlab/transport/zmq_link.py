"""ZeroMQ links: a REQ socket for request/reply control, a PULL socket for a device's data stream."""

from __future__ import annotations

from qlab.errors import InstrumentError
from qlab.transport.message import MessageTransport


def _zmq():
    try:
        import zmq
    except ImportError:
        raise InstrumentError("zmq", "pyzmq is not installed (pip install pyzmq)") from None
    return zmq


class ZmqReqTransport(MessageTransport):
    """REQ socket to ``tcp://host:port``. A lost reply does not wedge the socket: REQ_RELAXED lets the next
    request go out and REQ_CORRELATE drops the late answer to the old one."""

    def __init__(self, name: str, host: str, port: int, **kw):
        super().__init__(name, **kw)
        zmq = _zmq()
        self._zmq = zmq
        self.sock = zmq.Context.instance().socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.REQ_RELAXED, 1)
        self.sock.setsockopt(zmq.REQ_CORRELATE, 1)
        self.sock.connect(f"tcp://{host}:{port}")

    def _send_message(self, data: bytes) -> None:
        self.sock.send(data)

    def _recv_message(self, timeout_s: float) -> bytes | None:
        if not self.sock.poll(int(timeout_s * 1000), self._zmq.POLLIN):
            return None
        return self.sock.recv()

    def close(self) -> None:
        self.sock.close(0)


class ZmqStreamReceiver:
    """PULL socket connected to a device's data port; ``receive_all`` returns the multipart messages that
    have arrived, without waiting."""

    def __init__(self, name: str, host: str, port: int):
        zmq = _zmq()
        self.name = name
        self._zmq = zmq
        self.sock = zmq.Context.instance().socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)  # the data stream must not be dropped on the host side
        self.sock.connect(f"tcp://{host}:{port}")

    def receive_all(self, wait_s: float = 0.0) -> list[list[bytes]]:
        out: list[list[bytes]] = []
        if wait_s > 0:
            self.sock.poll(int(wait_s * 1000), self._zmq.POLLIN)
        while True:
            try:
                out.append(self.sock.recv_multipart(self._zmq.NOBLOCK))
            except self._zmq.Again:
                return out

    def close(self) -> None:
        self.sock.close(0)
