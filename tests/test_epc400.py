"""OZ Optics EPC-400: transcript and live simulator, error replies, pyvisa ASRL, coupling to the optics."""

from __future__ import annotations

import pytest

from qlab.config.schema import Limit
from qlab.errors import InstrumentError
from qlab.instruments.limits import Limits
from qlab.transport.simlink import SimLinkTransport
from qlab.transport.transcript import TranscriptTransport
from tests.transcripts import pairs_from_log

AXES = {"ch1": {"address": 1}, "ch2": {"address": 2}}
SESSION = [
    (b"VER?\r\n", b"VER?\r\nEPC-400 v2.1 (simulated)\r\nDone\r\n"),
    (b"SN?\r\n", b"SN?\r\nSN: 12345-EPC\r\nDone\r\n"),
    (b"MDC\r\n", b"MDC\r\nDone\r\n"),
    (b"ENABLE1\r\n", b"ENABLE1\r\nDone\r\n"),
    (b"V2,2500\r\n", b"V2,2500\r\nSet CH2 DC Voltage at: 2500mV\r\nDone\r\n"),
    (b"V?\r\n", b"V?\r\nVoltage(mV): CH1 +0 CH2 +2500 CH3 +0 CH4 +0\r\nDone\r\n"),
]


def _drv(transport):
    from qlab.drivers.ozoptics.epc400 import EPC400

    return EPC400("epc", transport=transport, limits=Limits("epc", {"position_deg": Limit(min=-360, max=360)}),
                  options={"axes": AXES})


def _session(drv) -> None:
    drv.open()
    drv.move_absolute(180.0, "ch2")  # 180° of retardance = 2.5 V at 72°/V
    assert drv.position("ch2") == pytest.approx(180.0)


@pytest.mark.parametrize("backend", ["transcript", "simulator"])
def test_epc400_session(backend: str) -> None:
    from qlab.drivers.ozoptics.epc400_sim import EPC400Simulator

    if backend == "transcript":
        tr = TranscriptTransport("epc", SESSION, write_termination=b"\r\n", read_termination=b"\r\n")
        _session(_drv(tr))
        assert tr.finished
    else:
        tr = SimLinkTransport("epc", EPC400Simulator(None, "epc400", {"axes": AXES}), write_termination=b"\r\n",
                              read_termination=b"\r\n")
        tr.log = []
        _session(_drv(tr))
        assert pairs_from_log(tr.log) == SESSION


def test_epc400_errors_and_visa_asrl() -> None:
    from qlab.drivers.ozoptics.epc400_sim import EPC400Simulator

    import qlab.sim.serial_url  # noqa: F401 - the simulation side registers ASRLqlabsim://
    from qlab.transport.visa import VisaTransport

    drv = _drv(SimLinkTransport("epc", EPC400Simulator(None, "epc400", {"axes": AXES}), write_termination=b"\r\n",
                                read_termination=b"\r\n")).open()
    with pytest.raises(InstrumentError, match="Error!"):
        drv.command("V2,9000")  # beyond ±5000 mV
    with pytest.raises(InstrumentError, match="Error!"):
        drv.command("BOGUS")
    assert "DC" in drv.status()["mode"]
    visa = _drv(VisaTransport("epc", "ASRLqlabsim://epc400::INSTR", write_termination=b"\r\n",
                              read_termination=b"\r\n")).open()
    visa.move_absolute(-90.0, "ch1")
    assert visa.position("ch1") == pytest.approx(-90.0)
    visa.close()


def test_epc400_voltage_changes_the_coincidences(make_lab) -> None:
    from qlab.stream.coincidence import count
    from tests.simlab_helpers import calibrated_delays, ideal_fibres

    def cfg(c):
        ideal_fibres(c)
        calibrated_delays(c)
        c["instruments"]["bob_compensator"].update(
            driver="ozoptics.epc400", limits={"position_deg": {"min": -360, "max": 360}},
            axes={"ch1": {"address": 1, "plate": "paddle", "retardance_waves": 0.0, "zero_deg": 22.5}})
    lab = make_lab(cfg, seed=61)
    lab["pump"].set_output(True)
    roles = {k: ch for k, (_, ch) in lab.roles().items()}

    def hh() -> int:
        return count(lab["tagger"].acquire(0.5), sorted(roles.values()), 2000).pair(roles["alice.H"], roles["bob.H"])

    before = hh()
    lab["bob_compensator"].move_absolute(180.0, "ch1")  # a half-wave of retardance at 22.5°: H -> D
    assert hh() < 0.7 * before
