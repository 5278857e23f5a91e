"""Drivers against byte-exact transcripts AND the live simulators, so neither can drift alone."""

from __future__ import annotations

import socket
import threading

import pytest

from qlab.config.schema import Limit
from qlab.errors import InstrumentError, InterlockError, ProtocolError
from qlab.instruments.limits import Limits
from qlab.transport.simlink import SimLinkTransport
from qlab.transport.transcript import TranscriptTransport
from tests.transcripts import pairs_from_log

ELL14_AXES = {"hwp": {"address": 0}}

# Request/response pairs from the Elliptec protocol manual's conventions (no host terminator; replies end
# CR LF; positions are 32-bit hex pulses, 143360 per turn, so 45° = 0x4600).
ELL14_SESSION = [
    (b"0in", b"0IN0E1140050020231701016800023000\r\n"),
    (b"0gs", b"0GS00\r\n"),
    (b"0ma00004600", b"0PO00004600\r\n"),
    (b"0gs", b"0GS00\r\n"),
    (b"0gp", b"0PO00004600\r\n"),
    (b"0gp", b"0PO00004600\r\n"),  # the travel limit is checked against the current position first
    (b"0mrFFFFE000", b"0PO00002600\r\n"),  # relative -8192 pulses (-20.57°)
    (b"0gs", b"0GS00\r\n"),
    (b"0ho0", b"0PO00000000\r\n"),
    (b"0gs", b"0GS00\r\n"),
]

ITC_IDN = b"Thorlabs,ITC4001,M00404162,1.8.0/1.5.0/2.3.0\n"
NOERR = b'+0,"No error"\n'
ITC4001_SESSION = [
    (b"*IDN?\n", ITC_IDN),
    (b"SYST:ERR?\n", NOERR),
    (b"SOUR:CURR 0.1\n", b""),
    (b"SYST:ERR?\n", NOERR),
    (b"SOUR:CURR?\n", b"1.000000E-01\n"),
    (b"OUTP:PROT:INTL:TRIP?\n", b"0\n"),
    (b"OUTP:PROT:KEYL:TRIP?\n", b"0\n"),
    (b"OUTP:PROT:OTEM:TRIP?\n", b"0\n"),
    (b"OUTP2 ON\n", b""),
    (b"SYST:ERR?\n", NOERR),
    (b"OUTP ON\n", b""),
    (b"SYST:ERR?\n", NOERR),
    (b"OUTP?\n", b"1\n"),
    (b"OUTP OFF\n", b""),
    (b"SYST:ERR?\n", NOERR),
]


def _ell14(transport):
    from qlab.drivers.thorlabs.ell14 import ELL14

    return ELL14("ell", transport=transport, limits=Limits("ell", {"position_deg": Limit(min=-360, max=720)}),
                 options={"axes": ELL14_AXES})


def _ell14_session(drv) -> None:
    drv.open()
    drv.move_absolute(45.0, "hwp")
    assert drv.position("hwp") == pytest.approx(45.0, abs=0.01)
    drv.move_relative(-8192 * 360 / 143360, "hwp")
    drv.home("hwp")


def _itc(transport):
    from qlab.drivers.thorlabs.itc4001 import ITC4001

    return ITC4001("pump", transport=transport, limits=Limits("pump", {"current_a": Limit(max=0.2)}))


def _itc_session(drv) -> None:
    drv.open()
    drv.set_current(0.1)
    drv.set_output(True)
    drv.set_output(False)


@pytest.mark.parametrize("backend", ["transcript", "simulator"])
def test_ell14_session(backend: str) -> None:
    from qlab.drivers.thorlabs.ell14_sim import ELL14Simulator

    if backend == "transcript":
        tr = TranscriptTransport("ell", ELL14_SESSION, read_termination=b"\r\n")
        _ell14_session(_ell14(tr))
        assert tr.finished
    else:
        tr = SimLinkTransport("ell", ELL14Simulator(None, "ell14", {"axes": ELL14_AXES}), read_termination=b"\r\n")
        tr.log = []
        _ell14_session(_ell14(tr))
        assert [(w, r) for (_, w), (_, r) in zip(tr.log[::2], tr.log[1::2], strict=True)] == ELL14_SESSION


def test_ell14_simulator_answers_the_transcript_byte_for_byte() -> None:
    from qlab.drivers.thorlabs.ell14_sim import ELL14Simulator

    from qlab.sim.clock import SimClock

    dev = ELL14Simulator(None, "ell14", {"axes": ELL14_AXES})
    dev.clock = SimClock(realtime=False)
    for request, reply in ELL14_SESSION:
        dev.receive(request)
        got = dev.read_due()
        if not got:  # a move: the reply comes when the motion ends (simulated time jumps there)
            assert dev.wait_for_output(0)
            got = dev.read_due()
        assert got == reply, request


@pytest.mark.parametrize("backend", ["transcript", "simulator"])
def test_itc4001_session(backend: str) -> None:
    from qlab.drivers.thorlabs.itc4001_sim import ITC4001Simulator

    if backend == "transcript":
        tr = TranscriptTransport("pump", ITC4001_SESSION, write_termination=b"\n")
        _itc_session(_itc(tr))
        assert tr.finished
    else:
        tr = SimLinkTransport("pump", ITC4001Simulator(None, "itc"), write_termination=b"\n")
        tr.log = []
        _itc_session(_itc(tr))
        assert pairs_from_log(tr.log) == ITC4001_SESSION


def test_ell14_device_errors_become_typed_errors() -> None:
    from qlab.drivers.thorlabs.ell14_sim import ELL14Simulator

    dev = ELL14Simulator(None, "ell14", {"axes": ELL14_AXES})
    drv = _ell14(SimLinkTransport("ell", dev, read_termination=b"\r\n")).open()
    dev.receive(b"0xx")  # a malformed command from elsewhere on the bus
    assert dev.read_due() == b"0GS03\r\n"
    with pytest.raises(InstrumentError, match="status 3"):
        drv.is_busy("hwp")  # the error latched and is reported again by the next status request
    assert drv.is_busy("hwp") is False
    with pytest.raises(InstrumentError, match="value out of range"):
        kind, data = drv._exchange("hwp", "sv00")
        drv._expect_position("hwp", kind, data, "set velocity")


def test_ell14_wrong_device_type_refused() -> None:
    tr = TranscriptTransport("ell", [(b"0in", b"0IN061140050020231701016800023000\r\n")], read_termination=b"\r\n")
    with pytest.raises(ProtocolError, match="not an ELL14"):
        _ell14(tr).open()


def test_itc4001_device_refusals_and_interlock() -> None:
    from qlab.drivers.thorlabs.itc4001_sim import ITC4001Simulator

    dev = ITC4001Simulator(None, "itc")
    drv = _itc(SimLinkTransport("pump", dev, write_termination=b"\n")).open()
    drv.transport.write_line("SOUR:CURR:LIM 0.05")
    with pytest.raises(InstrumentError, match="-222.*Data out of range"):
        drv.set_current(0.1)  # within qlab's limits, above the device's own limit
    drv.transport.write_line("FOO:BAR 1")
    assert drv.transport.query_line("SYST:ERR?") == '-113,"Undefined header"'
    drv.set_current(0.04)
    drv.set_output(True)
    dev.set_interlock(closed=False)
    assert drv.output() is False and drv.protection()["interlock"] is True
    with pytest.raises(InterlockError):
        drv.set_output(True)


def test_ell14_through_pyserial_url_and_pyvisa_asrl() -> None:
    import pyvisa

    import qlab.sim.serial_url  # noqa: F401 - the simulation side registers qlabsim:// and ASRLqlabsim://
    from qlab.transport.serial_port import SerialTransport
    from qlab.transport.visa import VisaTransport

    for tr in (SerialTransport("ell", "qlabsim://ell14?axes=0", read_termination=b"\r\n"),
               VisaTransport("ell", "ASRLqlabsim://ell14?axes=0::INSTR", read_termination=b"\r\n")):
        drv = _ell14(tr).open()
        drv.move_absolute(30.0, "hwp")
        assert drv.position("hwp") == pytest.approx(30.0, abs=0.01)
        drv.close()
    assert pyvisa.__version__


def test_lab_instrument_reachable_by_url_while_lab_runs(make_lab) -> None:
    import serial

    import qlab.sim.serial_url  # noqa: F401

    lab = make_lab()
    lab["bob_compensator"].move_absolute(90.0, "hwp")
    port = serial.serial_for_url("qlabsim://ell14/bob_compensator", timeout=1)
    port.write(b"2gp")  # the compensator's HWP sits at bus address 2
    assert port.read_until(b"\r\n") == b"2PO00008C00\r\n"


def test_sim_serve_pty_and_tcp(tmp_path) -> None:
    import os
    import select

    from qlab.sim.serve import serve

    stop, ready = threading.Event(), threading.Event()
    captured = {}

    def run_pty() -> None:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            th = threading.Thread(target=serve, args=("ell14",),
                                  kwargs=dict(pty=True, ready=ready, stop=stop, name="alice_analyzer"))
            th.start()
            ready.wait(10)
        captured["path"] = buf.getvalue().strip()
        captured["thread"] = th

    run_pty()
    fd = os.open(captured["path"], os.O_RDWR | os.O_NOCTTY)
    try:
        import termios
        import tty

        tty.setraw(fd)
        termios.tcflush(fd, termios.TCIOFLUSH)
        os.write(fd, b"0in")
        data = b""
        while not data.endswith(b"\r\n"):
            r, _, _ = select.select([fd], [], [], 5)
            assert r, "no answer on the pty"
            data += os.read(fd, 100)
        assert data.startswith(b"0IN0E")
    finally:
        stop.set()
        captured["thread"].join(5)
        os.close(fd)

    stop2, ready2 = threading.Event(), threading.Event()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    th = threading.Thread(target=serve, args=("itc4001",), kwargs=dict(tcp_port=port, ready=ready2, stop=stop2))
    th.start()
    ready2.wait(10)
    try:
        from qlab.transport.visa import VisaTransport

        drv = _itc(VisaTransport("pump", f"TCPIP::127.0.0.1::{port}::SOCKET", write_termination=b"\n")).open()
        assert "ITC4001" in drv.identify()
        drv.set_current(0.05)
        assert drv.current_setpoint() == pytest.approx(0.05)
        drv.close()
    finally:
        stop2.set()
        th.join(5)


@pytest.mark.hardware
def test_ell14_hardware(request) -> None:
    resource = dict(r.split("=", 1) for r in request.config.getoption("--hardware")).get("ell14")
    if not resource:
        pytest.skip("pass --hardware ell14=PORT")
    from qlab.transport.serial_port import SerialTransport

    drv = _ell14(SerialTransport("ell", resource, baudrate=9600, read_termination=b"\r\n")).open()
    p0 = drv.position("hwp")
    drv.move_relative(5.0, "hwp")
    assert drv.position("hwp") == pytest.approx(p0 + 5.0, abs=0.05)
    drv.move_absolute(p0, "hwp")


@pytest.mark.hardware
def test_itc4001_hardware(request) -> None:
    resource = dict(r.split("=", 1) for r in request.config.getoption("--hardware")).get("itc4001")
    if not resource:
        pytest.skip("pass --hardware itc4001=VISA_RESOURCE")
    from qlab.transport.visa import VisaTransport

    drv = _itc(VisaTransport("pump", resource, write_termination=b"\n")).open()
    assert "ITC4" in drv.identify()
    assert drv.output() in (True, False)


# -- the driver catalogue ------------------------------------------------------------------------------------------

def test_catalogue_entries_load_with_their_kind_and_simulation() -> None:
    from qlab.catalogue import DRIVERS, SIM_MODELS
    from qlab.sim.device import DeviceSimulator

    assert len(SIM_MODELS) == 14 and len(DRIVERS) == 14
    for driver_id, e in DRIVERS.items():
        cls = e.load()
        assert cls.kind == e.kind, driver_id
        assert e.simulator is not None or e.sim_builder is not None, driver_id
        if e.simulator is not None:
            sim_cls = e.load_simulator()
            assert sim_cls.model_id == e.sim_model, driver_id
            assert issubclass(sim_cls, DeviceSimulator) or hasattr(sim_cls, "request"), driver_id  # bytes / messages
        else:
            with pytest.raises(ValueError, match="API level"):
                e.load_simulator()
        if e.sim_builder is not None:
            assert callable(e.load_sim_builder()), driver_id
        assert e.driver.split(":")[0].rsplit(".", 1)[1] + "_sim" in (e.simulator or e.sim_builder), driver_id


def test_driver_modules_do_not_import_the_simulation() -> None:
    """Importing every driver (not its *_sim module) in a fresh interpreter loads nothing of qlab.sim."""
    import subprocess
    import sys

    code = ("import sys\nfrom qlab.catalogue import DRIVERS\n"
            "for e in DRIVERS.values():\n    e.load()\n"
            "import qlab.transport.serial_port, qlab.transport.visa, qlab.transport.simlink\n"
            "print(sorted(m for m in sys.modules if m.startswith('qlab.sim')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_identification_one_line_forms() -> None:
    from qlab.types import Identification

    idn = Identification.from_idn("Thorlabs,ITC4001,M00404162,1.8.0/1.5.0/2.3.0")
    assert (idn.vendor, idn.model, idn.serial) == ("Thorlabs", "ITC4001", "M00404162")
    assert idn.firmware == "1.8.0/1.5.0/2.3.0"
    assert str(idn) == "Thorlabs,ITC4001,M00404162,1.8.0/1.5.0/2.3.0" and "ITC4001" in idn
    apt = Identification("Thorlabs", "K10CR1", "55000123", "1.0.4")
    assert str(apt) == "Thorlabs K10CR1 serial 55000123 firmware 1.0.4"
    assert apt == "Thorlabs K10CR1 serial 55000123 firmware 1.0.4" and apt != Identification("Thorlabs", "K10CR1")
    assert str(Identification("Excelitas", "SPCM", details="passive")) == "Excelitas SPCM (passive)"


def test_apt_message_structures_round_trip() -> None:
    from qlab.drivers.thorlabs.apt import HwInfo, PolParams, StatusUpdate, VelocityParams

    info = HwInfo(55000123, b"K10CR1", 44, bytes([4, 0, 1, 0]), b"notes", 1, 0, 1)
    data = info.pack()
    assert len(data) == HwInfo.size() == 84
    back = HwInfo.unpack(data)
    assert (back.model_name, back.firmware_version, back.serial) == ("K10CR1", "1.0.4", 55000123)
    assert StatusUpdate.size() == 14 and VelocityParams.size() == 14 and PolParams.size() == 12
    assert VelocityParams.unpack(VelocityParams(1, 0, 15020, 73291090).pack()).max_velocity == 73291090
    with pytest.raises(ValueError, match="needs 12 data bytes"):
        PolParams.unpack(b"\0" * 6)
