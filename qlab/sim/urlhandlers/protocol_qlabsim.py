"""``qlabsim://`` for pyserial (and so for pyvisa-py ASRL resources): a serial port whose far end is a
device simulator.

``qlabsim://ell14`` makes a standalone simulated device (real-time clock, no optics);
``qlabsim://ell14/alice_analyzer`` attaches to the device of that instrument in a simulated lab that is
running in this process (see ``qlab.sim.registry``). ``?axes=0,1,2`` sets the bus addresses of a
standalone multi-axis device.
"""

from __future__ import annotations

import time
import urllib.parse

import serial
from serial.serialutil import PortNotOpenError, SerialBase, SerialException


class Serial(SerialBase):
    def open(self) -> None:
        if self._port is None:
            raise SerialException("port must be configured before use")
        from qlab.sim.registry import device_for_url

        try:
            self.device = device_for_url(self.portstr)
        except (KeyError, ValueError) as exc:
            raise SerialException(f"cannot open {self.portstr!r}: {exc}") from None
        self._buf = bytearray()
        self.is_open = True

    def from_url(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "qlabsim":
            raise SerialException(f"expected a qlabsim:// URL, got {url!r}")
        return url

    def _reconfigure_port(self) -> None:
        pass

    def close(self) -> None:
        self.is_open = False

    @property
    def in_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        self._buf += self.device.read_due()
        return len(self._buf)

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise PortNotOpenError()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while len(self._buf) < size:
            self._buf += self.device.read_due()
            if len(self._buf) >= size:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not self.device.clock.realtime and self.device.pending():
                self.device.wait_for_output(0)
            else:
                time.sleep(0.0005)
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def write(self, data: bytes) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        self.device.receive(bytes(data))
        return len(data)

    def reset_input_buffer(self) -> None:
        self._buf.clear()
        self.device.read_due()

    def reset_output_buffer(self) -> None:
        pass

    def flush(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass


__all__ = ["Serial", "serial"]
