"""Fault injection mechanics: the FaultPlan timing, `--fault KIND@SECONDS` parsing, and a served device that
goes silent / drops the link after its first client connects (loopback, bounded waits, always stopped)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from qlab.errors import InstrumentDisconnected, InstrumentTimeout
from qlab.sim.faults import FAULT_KINDS, FaultPlan, parse_fault


def test_parse_fault() -> None:
    assert parse_fault("silent") == ("silent", None)
    assert parse_fault("device-error@2.5") == ("device-error", 2.5)
    for bad in ("nosuch", "silent@x", "garbage@-1"):
        with pytest.raises(ValueError, match="fault"):
            parse_fault(bad)
    assert set(FAULT_KINDS) >= {"silent", "disconnect", "garbage", "truncated", "device-error", "overflow"}


def test_fault_plan_timing() -> None:
    t = [0.0]
    plan = FaultPlan(lambda: t[0])
    plan.inject("garbage", after_s=1.0, from_connect=True)
    t[0] = 5.0
    assert plan.active() is None  # no client yet: the delay has not started
    plan.connected()
    t[0] = 5.9
    assert plan.active() is None
    t[0] = 6.0
    assert plan.active() == "garbage"
    plan.clear()
    assert plan.active() is None


def test_in_process_link_faults() -> None:
    from qlab.drivers.thorlabs.itc4001 import ITC4001
    from qlab.drivers.thorlabs.itc4001_sim import ITC4001Simulator

    from qlab.instruments.limits import Limits
    from qlab.transport.simlink import SimLinkTransport

    dev = ITC4001Simulator(None, "itc4001")
    drv = ITC4001("pump", transport=SimLinkTransport("pump", dev, write_termination=b"\n", timeout_s=0.05),
                  limits=Limits("pump", {})).open()
    dev.inject("disconnect")
    with pytest.raises(InstrumentDisconnected, match="pump") as info:
        drv.output()
    assert isinstance(info.value, OSError)
    dev.clear_fault()
    assert drv.output() is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["silent", "disconnect"])
def test_served_fault_after_first_connect(kind: str) -> None:
    """`qlab sim serve itc4001 --tcp PORT --fault KIND@0.3`: answers at first, then fails as injected."""
    from qlab.sim.serve import serve
    from qlab.transport.tcp import TcpTransport

    port, ready, stop = _free_port(), threading.Event(), threading.Event()
    server = threading.Thread(target=serve, args=("itc4001",),
                              kwargs={"tcp_port": port, "ready": ready, "stop": stop, "fault": (kind, 0.3)},
                              daemon=True)
    server.start()
    try:
        assert ready.wait(10)
        tr = TcpTransport("pump", "127.0.0.1", port, timeout_s=0.5, write_termination=b"\n")
        try:
            assert "ITC4001" in tr.query_line("*IDN?")
            time.sleep(0.5)
            expected = InstrumentTimeout if kind == "silent" else OSError  # InstrumentDisconnected, or a reset socket
            with pytest.raises(expected):
                tr.query_line("*IDN?")
                tr.query_line("*IDN?")  # a dropped link may only show on the second exchange
        finally:
            tr.close()
    finally:
        stop.set()
        server.join(5)
    assert not server.is_alive()
