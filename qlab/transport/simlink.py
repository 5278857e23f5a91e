"""In-process byte link to a device simulator: the driver's exact bytes go through the simulator's parser.

Waiting for a reply that the simulated device schedules later (a move that completes) advances the
simulated clock instead of the wall clock when the lab runs faster than real time.
"""

from __future__ import annotations

from qlab.sim.device import DeviceSimulator
from qlab.transport.base import BufferedTransport


class SimLinkTransport(BufferedTransport):
    def __init__(self, name: str, device: DeviceSimulator, **kw):
        super().__init__(name, **kw)
        self.device = device
        device.connect()

    def _write(self, data: bytes) -> None:
        self.device.receive(data)

    def _fill(self, timeout_s: float, what: str) -> None:
        got = self.device.read_due()
        if got:
            self._buf += got
            return
        if not self.device.wait_for_output(timeout_s):
            raise self.timeout_error(f"{what}, got {bytes(self._buf)!r}")
        self._buf += self.device.read_due()

    def drain(self) -> bytes:
        with self.lock:
            stale = bytes(self._buf) + self.device.read_due()
            self._buf.clear()
            return stale
