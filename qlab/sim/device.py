"""Base of every device simulator: bytes in, bytes out, replies that may be due later."""

from __future__ import annotations

import threading
import zlib
from typing import TYPE_CHECKING

from qlab.sim.clock import SimClock
from qlab.sim.faults import FaultPlan, LinkDropped

if TYPE_CHECKING:
    from qlab.sim.model import SimLab
    from qlab.transport.simlink import SimLinkTransport


class DeviceSimulator:
    """A simulated device speaking its real wire protocol.

    Subclasses implement ``handle(data)`` which consumes input bytes (kept in ``self.inbuf``) and calls
    ``reply(bytes, delay_s)``. Replies with a delay (a move completing) become readable only when the
    simulated clock reaches them.

    Faults (qlab.sim.faults): ``inject(kind, after_s)`` makes the device go silent, drop the link, garble or
    truncate its replies, or (through ``device_error_active``, which each model's parser consults) report an
    error in its own protocol. ``frame_end`` is the terminator of the model's replies, kept by garbling.
    """

    model_id = ""
    frame_end: bytes = b"\n"

    def __init__(self, lab: SimLab | None = None, name: str = "", options: dict | None = None):
        self.lab = lab
        self.name = name or self.model_id
        self.options = dict(options or {})
        self.clock: SimClock = lab.clock if lab is not None else SimClock(realtime=True)
        self.inbuf = bytearray()
        self._outbox: list[tuple[float, bytes]] = []
        self._cond = threading.Condition()
        self.faults = FaultPlan(self.clock.now, seed=zlib.crc32(self.name.encode()))

    # -- faults -------------------------------------------------------------------------------------------
    def inject(self, kind: str, after_s: float | None = None, from_connect: bool = False) -> None:
        """Start fault ``kind`` (qlab.sim.faults.FAULT_KINDS) now or ``after_s`` seconds of device clock from now
        (``from_connect``: from the first client contact). ValueError for an unknown kind."""
        self.faults.inject(kind, after_s, from_connect)

    def clear_fault(self) -> None:
        self.faults.clear()

    @property
    def device_error_active(self) -> bool:
        """True while the device should answer every command with an error in its own protocol."""
        return self.faults.active() == "device-error"

    def check_link(self) -> None:
        """Raise LinkDropped while a ``disconnect`` fault is in effect (servers close the client's socket)."""
        self.faults.connected()
        if self.faults.active() == "disconnect":
            raise LinkDropped(f"{self.name}: simulated disconnect")

    # -- called by transports -----------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        self.check_link()
        with self._cond:
            if self.faults.active() == "silent":
                self.inbuf.clear()  # the device hears nothing and answers nothing
                return
            self.inbuf += data
            self.handle()
            self._cond.notify_all()

    def read_due(self) -> bytes:
        self.check_link()
        with self._cond:
            now = self.clock.now()
            due = [b for t, b in self._outbox if t <= now]
            self._outbox = [(t, b) for t, b in self._outbox if t > now]
            if self.faults.active() == "silent":
                return b""
            return b"".join(due)

    def pending(self) -> bool:
        with self._cond:
            return bool(self._outbox)

    def wait_for_output(self, timeout_s: float) -> bool:
        """Wait until a reply is due. Fast mode: jump the simulated clock to the next scheduled reply."""
        self.check_link()
        with self._cond:
            if not self._outbox:
                if self.clock.realtime:
                    self._cond.wait(timeout_s)
                if not self._outbox:
                    return False
            t_next = min(t for t, _ in self._outbox)
        self.clock.advance_to(t_next)
        return True

    def connect(self) -> None:
        """A client connected (TCP accept, or an in-process link opened): devices with a banner send it."""

    # -- for subclasses ----------------------------------------------------------------------------------
    def reply(self, data: bytes, delay_s: float = 0.0) -> None:
        fault = self.faults.active()
        if fault == "garbage":
            data = self.faults.garble(data, self.frame_end)
        elif fault == "truncated":
            data = self.faults.truncate(data)
        self._outbox.append((self.clock.now() + delay_s, data))

    def handle(self) -> None:
        raise NotImplementedError


def sim_link(driver_cls: type, name: str, device: DeviceSimulator, timeout_s: float) -> SimLinkTransport:
    """An in-process byte link from a driver of class ``driver_cls`` to ``device``, with the driver's
    terminations."""
    from qlab.transport.simlink import SimLinkTransport

    return SimLinkTransport(name, device, timeout_s=timeout_s,
                            write_termination=getattr(driver_cls, "write_termination", b""),
                            read_termination=getattr(driver_cls, "read_termination", b"\n"))
