"""pyvisa transport (SCPI over USBTMC, TCPIP sockets, ASRL). Uses pyvisa-py unless told otherwise."""

from __future__ import annotations

from qlab.errors import InstrumentError
from qlab.transport.base import Transport


class VisaTransport(Transport):
    def __init__(self, name: str, resource: str, visa_library: str = "@py", **kw):
        super().__init__(name, **kw)
        import pyvisa

        try:
            self.rm = pyvisa.ResourceManager(visa_library)
            self.res = self.rm.open_resource(resource)
        except Exception as exc:  # noqa: BLE001 - pyvisa raises many types; report them all the same way
            raise InstrumentError(name, f"cannot open VISA resource {resource!r}: {exc}") from None
        self.res.timeout = int(self.timeout_s * 1000)
        self.res.read_termination = None
        self.res.write_termination = None

    def _write(self, data: bytes) -> None:
        self.res.write_raw(data)

    def _read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        import pyvisa

        buf = bytearray()
        try:
            while not buf.endswith(terminator):
                buf += self.res.read_bytes(1)
        except pyvisa.errors.VisaIOError:
            raise self.timeout_error(f"waiting for {terminator!r}, got {bytes(buf)!r}") from None
        return bytes(buf)

    def _read_exact(self, n: int, timeout_s: float) -> bytes:
        import pyvisa

        try:
            return bytes(self.res.read_bytes(n))
        except pyvisa.errors.VisaIOError:
            raise self.timeout_error(f"waiting for {n} bytes") from None

    def close(self) -> None:
        self.res.close()
