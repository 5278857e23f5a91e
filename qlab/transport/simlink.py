"""In-process byte link to a device simulator: the driver's exact bytes go through the simulator's parser.

Waiting for a reply that the simulated device schedules later (a move that completes) advances the
simulated clock instead of the wall clock when the lab runs faster than real time. A device whose link a
fault drops raises ConnectionError; the link reports it as InstrumentDisconnected naming the instrument.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from qlab.errors import InstrumentDisconnected
from qlab.transport.base import BufferedTransport


class ByteDevice(Protocol):
    """What the link needs of a device simulator (qlab.sim.device.DeviceSimulator provides it; the transport
    layer does not import the simulation)."""

    def connect(self) -> None: ...

    def receive(self, data: bytes) -> None: ...

    def read_due(self) -> bytes: ...

    def wait_for_output(self, timeout_s: float) -> bool: ...


class SimLinkTransport(BufferedTransport):
    def __init__(self, name: str, device: ByteDevice, **kw):
        super().__init__(name, **kw)
        self.device = device
        device.connect()

    @contextmanager
    def _link(self) -> Iterator[None]:
        try:
            yield
        except ConnectionError as exc:
            raise InstrumentDisconnected(self.name, f"link lost: {exc}") from None

    def _write(self, data: bytes) -> None:
        with self._link():
            self.device.receive(data)

    def _fill(self, timeout_s: float, what: str) -> None:
        with self._link():
            got = self.device.read_due()
            if got:
                self._buf += got
                return
            if not self.device.wait_for_output(timeout_s):
                raise self.timeout_error(f"{what}, got {bytes(self._buf)!r}")
            self._buf += self.device.read_due()

    def drain(self) -> bytes:
        with self.lock, self._link():
            stale = bytes(self._buf) + self.device.read_due()
            self._buf.clear()
            return stale
