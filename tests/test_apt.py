"""Thorlabs APT devices (K10CR1, MPC320): literal frames from the protocol facts, the live simulator, and a
transcript replay of what it answered."""

from __future__ import annotations

import struct

import pytest

from qlab.config.schema import Limit
from qlab.errors import InstrumentError, InstrumentTimeout
from qlab.instruments.limits import Limits
from qlab.transport.simlink import SimLinkTransport
from qlab.transport.transcript import TranscriptTransport
from tests.transcripts import pairs_from_log


def _k10(transport):
    from qlab.drivers.thorlabs.k10cr1 import K10CR1

    return K10CR1("rot", transport=transport, limits=Limits("rot", {"position_deg": Limit(min=-360, max=360)}),
                  options={"axes": {"hwp": {"address": 1}}})


def test_k10cr1_frames_simulator_and_transcript() -> None:
    from qlab.drivers.thorlabs.k10cr1_sim import K10CR1Simulator

    tr = SimLinkTransport("rot", K10CR1Simulator(None, "k10cr1", {"axes": {"hwp": {"address": 1}}}))
    tr.log = []
    drv = _k10(tr).open()
    assert "K10CR1" in drv.identify()
    drv.move_absolute(45.0, "hwp")
    assert drv.position("hwp") == pytest.approx(45.0, abs=1e-4)
    pairs = pairs_from_log(tr.log)
    writes = [w for w, _ in pairs]
    # Requests exactly as the APT protocol defines them (host 0x01 -> device 0x50).
    assert writes[0] == bytes.fromhex("050000005001")  # HW_REQ_INFO
    assert writes[1] == bytes.fromhex("100201015001")  # MOD_SET_CHANENABLESTATE ch1 enable
    assert writes[2] == bytes.fromhex("13040e00d001") + struct.pack("<Hiii", 1, 0, 10 * 1502, 10 * 7329109)
    assert writes[3] == bytes.fromhex("53040600d001") + struct.pack("<Hi", 1, 6144000)  # 45° = 6144000 counts
    assert bytes.fromhex("290401005001") in writes  # MOT_REQ_STATUSBITS while waiting
    assert writes[-1] == bytes.fromhex("110401005001")  # MOT_REQ_POSCOUNTER
    replies = {w: r for w, r in pairs}
    assert replies[writes[0]][:6] == bytes.fromhex("060054008150")  # HW_GET_INFO, 84 data bytes
    assert replies[writes[0]][10:16] == b"K10CR1"
    assert replies[writes[3]][:6] == bytes.fromhex("64040e008150")  # MOVE_COMPLETED with 14-byte status
    assert replies[writes[-1]] == bytes.fromhex("120406008150") + struct.pack("<Hi", 1, 6144000)
    # The same exchange replayed from the transcript drives a fresh driver identically.
    rt = TranscriptTransport("rot", pairs)
    drv2 = _k10(rt).open()
    drv2.move_absolute(45.0, "hwp")
    assert drv2.position("hwp") == pytest.approx(45.0, abs=1e-4) and rt.finished


MPC_AXES = {"paddle1": {"address": 1}, "paddle2": {"address": 2}, "paddle3": {"address": 4}}


def _mpc(transport):
    from qlab.drivers.thorlabs.mpc320 import MPC320

    return MPC320("pc", transport=transport, limits=Limits("pc", {"position_deg": Limit(min=0, max=170)}),
                  options={"axes": MPC_AXES})


def _mpc_session(drv) -> None:
    drv.move_absolute(85.0, "paddle2")
    assert drv.position("paddle2") == pytest.approx(85.0, abs=0.2)  # 1370 steps per 170°
    drv.set_velocity_percent(80)


def test_mpc320_frames_simulator_and_transcript() -> None:
    from qlab.drivers.thorlabs.mpc320_sim import MPC320Simulator

    tr = SimLinkTransport("pc", MPC320Simulator(None, "mpc320", {"axes": MPC_AXES}))
    tr.log = []
    drv = _mpc(tr).open()
    assert "MPC320" in drv.identify()
    _mpc_session(drv)
    pairs = pairs_from_log(tr.log)
    writes = [w for w, _ in pairs]
    replies = {w: r for w, r in pairs}
    assert writes[0] == bytes.fromhex("050000005001")  # HW_REQ_INFO
    assert writes[1] == bytes.fromhex("310500005001")  # POL_REQ_PARAMS
    # POL_GET_PARAMS: <H 0><H velocity %><H home><H jog1..3>, 12 data bytes (long frame, dest|0x80).
    assert pairs[1][1] == bytes.fromhex("32050c008150") + struct.pack("<HHHHHH", 0, 50, 685, 25, 25, 25)
    # Paddle 2 is channel bitmask 0x02; 85° = 685 steps; completion is the header-only MOVE_COMPLETED.
    assert writes[2] == bytes.fromhex("53040600d001") + struct.pack("<Hi", 2, 685)
    assert pairs[2][1] == bytes.fromhex("640402000150")
    assert bytes.fromhex("110402005001") in writes  # MOT_REQ_POSCOUNTER for paddle 2
    assert replies[bytes.fromhex("110402005001")] == bytes.fromhex("120406008150") + struct.pack("<Hi", 2, 685)
    assert bytes.fromhex("30050c00d001") + struct.pack("<HHHHHH", 0, 80, 685, 25, 25, 25) in writes
    assert pairs[-1][1] == bytes.fromhex("32050c008150") + struct.pack("<HHHHHH", 0, 80, 685, 25, 25, 25)
    rt = TranscriptTransport("pc", pairs)
    drv2 = _mpc(rt).open()
    _mpc_session(drv2)
    assert rt.finished


def test_mpc320_refuses_bad_velocity_and_travel() -> None:
    from qlab.drivers.thorlabs.mpc320_sim import MPC320Simulator

    drv = _mpc(SimLinkTransport("pc", MPC320Simulator(None, "mpc320", {"axes": MPC_AXES}))).open()
    with pytest.raises(InstrumentError, match="velocity must be 10-100"):
        drv.set_velocity_percent(5)
        drv.position("paddle1")  # the device answers the bad parameters with an error frame


def test_k10cr1_quirk_no_move_without_velocity_parameters() -> None:
    from qlab.drivers.thorlabs.apt import Frame
    from qlab.drivers.thorlabs.k10cr1_sim import K10CR1Simulator

    dev = K10CR1Simulator(None, "k10cr1", {"axes": {"hwp": {"address": 1}}})
    dev.receive(Frame(0x0453, data=struct.pack("<Hi", 1, 100000)).encode())
    assert not dev.wait_for_output(0.1)  # the real stage just sits there


def test_apt_device_errors_become_typed_errors() -> None:
    from qlab.drivers.thorlabs.mpc320 import MPC320
    from qlab.drivers.thorlabs.mpc320_sim import MPC320Simulator

    axes = {"paddle1": {"address": 1}, "paddle2": {"address": 2}, "paddle3": {"address": 4}}
    drv = MPC320("pc", transport=SimLinkTransport("pc", MPC320Simulator(None, "mpc320", {"axes": axes})),
                 options={"axes": axes}).open()
    drv.move_absolute(120.0, "paddle2")
    assert drv.position("paddle2") == pytest.approx(120.0, abs=0.2)
    with pytest.raises(InstrumentError, match="outside travel"):
        drv.move_absolute(175.0, "paddle1")  # beyond the paddles' 170°, refused by the device itself
    with pytest.raises(InstrumentError, match="velocity"):
        drv.set_velocity_percent(5)
    drv.set_velocity_percent(80)
    assert struct.unpack("<HHHHHH", drv.pol_params[:12])[1] == 80


def test_k10cr1_silent_device_times_out() -> None:
    from qlab.drivers.thorlabs.k10cr1_sim import K10CR1Simulator

    dev = K10CR1Simulator(None, "k10cr1", {"axes": {"hwp": {"address": 1}}})
    drv = _k10(SimLinkTransport("rot", dev, timeout_s=0.2)).open()
    dev.handle = lambda: dev.inbuf.clear()
    with pytest.raises(InstrumentTimeout):
        drv.position("hwp")


def test_k10cr1_and_mpc320_drive_the_simulated_optics(make_lab) -> None:
    from qlab.procedures.engine import RunEngine
    from qlab.procedures.polarization import PolarizationProcedure
    from qlab.stream.coincidence import count
    from tests.simlab_helpers import calibrated_delays

    def cfg(c):
        calibrated_delays(c)
        c["instruments"]["bob_analyzer"].update(driver="thorlabs.k10cr1", axes={"hwp": {"address": 1}})
        c["instruments"]["bob_compensator"].update(
            driver="thorlabs.mpc320", limits={"position_deg": {"min": 0, "max": 170}},
            axes={"p1": {"address": 1, "plate": "quarter"}, "p2": {"address": 2, "plate": "half"},
                  "p3": {"address": 4, "plate": "quarter"}})
    lab = make_lab(cfg, seed=51)
    lab["pump"].set_output(True)  # on before the run, so the run restores it on for the measurements after
    r = RunEngine(lab).run(PolarizationProcedure(), record=False)
    assert min(r["visibility_after"]["HV"], r["visibility_after"]["DA"]) > 0.95 * 0.98
    roles = {k: ch for k, (_, ch) in lab.roles().items()}

    def hh() -> int:
        return count(lab["tagger"].acquire(0.5), sorted(roles.values()), 2000).pair(roles["alice.H"], roles["bob.H"])

    before = hh()
    lab["bob_analyzer"].move_absolute(45.0, "hwp")  # the K10CR1 turns the analyzer by 90°
    assert hh() < 0.2 * before
