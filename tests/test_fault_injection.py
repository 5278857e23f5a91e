"""Fault injection mechanics: the FaultPlan timing, `--fault KIND@SECONDS` parsing, and a served device that
goes silent / drops the link after its first client connects (loopback, bounded waits, always stopped)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from qlab.errors import InstrumentDisconnected, InstrumentError, InstrumentTimeout, ProtocolError
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


# -- every driver against every fault its simulator can inject --------------------------------------------------
EXPECTED = {
    "silent": (InstrumentTimeout,),
    "disconnect": (InstrumentDisconnected,),
    "garbage": (ProtocolError,),
    "truncated": (ProtocolError, InstrumentTimeout),  # a cut line never completes; a cut frame/buffer is corrupt
    "device-error": (InstrumentError,),
}
WIRE_MODELS = ["abacus", "dlcpro", "eos", "ell14", "epc400", "id120", "itc4001", "k10cr1", "mpc320"]


@pytest.mark.parametrize("kind", sorted(EXPECTED))
@pytest.mark.parametrize("model", WIRE_MODELS)
def test_wire_driver_fault(model: str, kind: str) -> None:
    """Each wire-protocol driver on its simulator (in-process link): healthy open, then the fault -> the typed error
    of that fault, naming the instrument, within the transport timeout."""
    from qlab.transport.simlink import SimLinkTransport
    from tests.test_fuzz_drivers import WIRES

    w = WIRES[model]
    dev = w.simulator()
    tr = SimLinkTransport(model, dev, write_termination=w.terms[0], read_termination=w.terms[1], timeout_s=0.2)
    drv = w.driver(tr)
    tr.name = drv.name  # errors name the instrument, whichever layer raises them
    drv.move_reply_timeout_s = 0.2  # motion controllers wait longer for a move; keep the silent case short
    drv.open()
    dev.inject(kind)
    with pytest.raises(EXPECTED[kind]) as info:
        w.session(drv)
    assert info.value.instrument == drv.name
    if kind == "device-error":
        assert not isinstance(info.value, InstrumentTimeout | ProtocolError), info.value


def test_id1000_control_faults() -> None:
    from qlab.drivers.idquantique.id1000_sim import ID1000Simulator

    from qlab.transport.message import SimMessageTransport
    from tests.test_fuzz_drivers import _id1000, _id1000_session

    for kind, expected in EXPECTED.items():
        dev = ID1000Simulator(None, "tc")
        drv = _id1000(SimMessageTransport("tc", dev, read_termination=b"\n", timeout_s=0.1)).open()
        dev.inject(kind)
        with pytest.raises(expected) as info:
            _id1000_session(drv)
        assert info.value.instrument == "tc", kind


def _tagger(driver: str):
    def edit(cfg) -> None:
        if driver == "idquantique.id1000":  # four inputs: Alice's detectors only
            cfg["instruments"]["tagger"] = {"driver": driver, "backend": "sim"}
            for k in "HVDA":
                del cfg["instruments"][f"bob_{k}"]
        elif driver != "swabian.timetagger":
            cfg["instruments"]["tagger"] = {"driver": driver, "backend": "sim",
                                            "settings": {"trigger_levels_v": {i: 0.5 for i in range(1, 9)}}}
    return edit


TAGGERS = ["swabian.timetagger", "picoquant.multiharp", "picoquant.hydraharp", "idquantique.id1000"]


@pytest.mark.parametrize("kind", [*sorted(EXPECTED), "overflow"])
@pytest.mark.parametrize("driver", TAGGERS)
def test_tagger_fault(make_lab, driver: str, kind: str) -> None:
    """Each tagger (SDK-level or streamed) during an acquisition: the fault's typed error naming the tagger, and
    overflow as a gap the device reports (no error, no invented tags)."""
    lab = make_lab(_tagger(driver))
    tagger = lab["tagger"]
    assert len(tagger.acquire(0.02)) > 0
    lab.sim.device_sims["tagger"].inject(kind)
    try:
        if kind == "overflow":
            chunk = tagger.acquire(0.02)
            assert len(chunk.gaps) >= 1 and len(chunk) == 0
            return
        expected = EXPECTED[kind]
        if kind == "disconnect" and driver.startswith("picoquant"):
            expected = (InstrumentError,)  # the library reports a lost device only as an error code of each call
        with pytest.raises(expected) as info:
            tagger.acquire(0.02)
        assert info.value.instrument == "tagger"
    finally:
        lab.sim.device_sims["tagger"].clear_fault()


def test_cli_fault_argument(capsys) -> None:
    from qlab.cli import main

    with pytest.raises(SystemExit) as info:
        main(["sim", "serve", "itc4001", "--tcp", "1", "--fault", "meltdown@3"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown fault 'meltdown'" in err and "Traceback" not in err
