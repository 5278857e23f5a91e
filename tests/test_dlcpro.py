"""Toptica DLC pro: command-line transcript and live simulator, refusals, interlock, TCP serving."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from qlab.config.schema import Limit
from qlab.errors import InstrumentError, InterlockError
from qlab.instruments.limits import Limits
from qlab.transport.simlink import SimLinkTransport
from qlab.transport.transcript import TranscriptTransport
from tests.transcripts import pairs_from_log

SESSION = [
    (b"(param-ref 'system-type)\n", b'"DLCpro"\n> '),
    (b"(param-ref 'serial-number)\n", b'"DLC-SIM-0042"\n> '),
    (b"(param-ref 'fw-ver)\n", b'"2.4.0"\n> '),
    (b"(param-set! 'laser1:dl:cc:current-set 120.000)\n", b"0\n> "),
    (b"(param-ref 'laser1:dl:cc:current-set)\n", b"120\n> "),
]


def _drv(transport):
    from qlab.drivers.toptica.dlcpro import DLCPro

    return DLCPro("dl", transport=transport, limits=Limits("dl", {"current_a": Limit(max=0.18)}))


def _session(drv) -> None:
    drv.open()
    drv.set_current(0.12)
    assert drv.current_setpoint() == pytest.approx(0.12)


@pytest.mark.parametrize("backend", ["transcript", "simulator"])
def test_dlcpro_session(backend: str) -> None:
    from qlab.drivers.toptica.dlcpro_sim import DLCProSimulator

    if backend == "transcript":
        tr = TranscriptTransport("dl", SESSION, write_termination=b"\n", read_termination=b"\n> ")
        tr._buf += b"DeCoF Command Line\r\n> "  # the banner the device sends on connect
        _session(_drv(tr))
        assert tr.finished
    else:
        tr = SimLinkTransport("dl", DLCProSimulator(None, "dlcpro"), write_termination=b"\n",
                              read_termination=b"\n> ")
        tr.log = []
        _session(_drv(tr))
        assert pairs_from_log(tr.log[1:]) == SESSION  # after the banner


def test_dlcpro_refusals_and_interlock() -> None:
    from qlab.drivers.toptica.dlcpro_sim import DLCProSimulator

    dev = DLCProSimulator(None, "dlcpro")
    drv = _drv(SimLinkTransport("dl", dev, write_termination=b"\n", read_termination=b"\n> ")).open()
    with pytest.raises(InstrumentError, match="unknown parameter"):
        drv._ref("laser1:nonsense")
    with pytest.raises(InstrumentError, match="code -2"):
        drv._set("emission", "#t")  # read-only: emission is the key switch and the button
    drv._set("laser1:dl:cc:current-clip", "100")
    with pytest.raises(InstrumentError, match="code -4"):
        drv.set_current(0.15)  # inside qlab's limit, above the device's current clip
    drv.set_current(0.09)
    drv.set_output(True)
    assert drv.output() and drv.measured_current() == pytest.approx(0.09)
    dev.set_interlock(closed=False)
    assert not drv.output() and drv.protection()["interlock"]
    with pytest.raises(InterlockError):
        drv.set_output(True)


def test_dlcpro_pumps_the_simulated_source(make_lab) -> None:
    def cfg(c):
        c["instruments"]["pump"].update(driver="toptica.dlcpro", settings={"current_a": 0.12, "temperature_c": 25})
    lab = make_lab(cfg, seed=91)
    assert lab.sim.pair_rate_hz() == 0
    lab["pump"].set_output(True)
    assert lab.sim.pair_rate_hz() > 1e5
    lab.lasers_off()
    assert lab.sim.pair_rate_hz() == 0


def test_dlcpro_served_on_tcp_with_monitoring_line() -> None:
    from qlab.sim.serve import serve
    from qlab.transport.tcp import TcpTransport

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    stop, ready = threading.Event(), threading.Event()
    th = threading.Thread(target=serve, args=("dlcpro",), kwargs=dict(tcp_port=port, ready=ready, stop=stop))
    th.start()
    ready.wait(10)
    try:
        drv = _drv(TcpTransport("dl", "127.0.0.1", port, write_termination=b"\n", read_termination=b"\n> ")).open()
        assert "DLCpro" in drv.identify()
        drv.set_current(0.05)
        mon = socket.create_connection(("127.0.0.1", port + 1), timeout=5)
        mon.sendall(b"(add 'laser1:dl:cc:current-set 50)\n")
        deadline, data = time.time() + 5, b""
        while data.count(b"\n") < 2 and time.time() < deadline:
            data += mon.recv(1000)
        mon.close()
        assert b"'laser1:dl:cc:current-set 50)" in data
        drv.close()
    finally:
        stop.set()
        th.join(5)
