"""Tausand Abacus coincidence counter: register frames from the protocol facts, simulator and transcript,
silent refusals turned into typed errors, and counts that follow the simulated optics."""

from __future__ import annotations

import numpy as np
import pytest

from qlab.config.schema import Limit
from qlab.errors import InstrumentError, InstrumentTimeout, ProtocolError
from qlab.instruments.limits import Limits
from qlab.transport.simlink import SimLinkTransport
from qlab.transport.transcript import TranscriptTransport
from tests.transcripts import pairs_from_log


def _abacus(transport):
    from qlab.drivers.tausand.abacus import Abacus

    return Abacus("ab", transport=transport,
                  limits=Limits("ab", {"coincidence_window_ps": Limit(min=1000, max=100_000)}))


def test_timer_codec() -> None:
    from qlab.drivers.tausand.abacus import SAMPLING_S, decode_timer, encode_timer

    assert encode_timer(10e-9) == 1 << 12 | 10 and encode_timer(5e-9) == 0 << 12 | 50
    assert encode_timer(0.1) == 8 << 12 | 10 and encode_timer(1000.0) == 12 << 12 | 10
    for s in [*SAMPLING_S, 15e-9, 25e-9, 95e-9, 50e-6]:
        assert decode_timer(encode_timer(s)) == pytest.approx(s, rel=1e-12)
    with pytest.raises(ValueError, match="two significant digits"):
        encode_timer(123e-9)


def _session(drv) -> None:
    drv.set_coincidence_window(10_000)
    drv.set_delay(1, 15_000)


def test_abacus_frames_simulator_and_transcript() -> None:
    from qlab.drivers.tausand.abacus_sim import AbacusSimulator

    tr = SimLinkTransport("ab", AbacusSimulator(None, "abacus"), timeout_s=0.2)
    tr.log = []
    drv = _abacus(tr).open()
    assert drv.identify() == "Tausand Abacus AB1004 (4 inputs, 5 ns resolution)" and drv.channels() == [1, 2, 3, 4]
    _session(drv)
    assert drv.coincidence_window() == 10_000 and drv.delay(1) == 15_000
    pairs = pairs_from_log(tr.log)
    assert pairs[0] == (b"*IDN?", b"Tausand Abacus AB1004")
    # Window 10 ns = 10·10^(1−10) s -> 0x100A into register 81 (0x51); no reply, so the driver reads it back.
    assert pairs[1] == (bytes.fromhex("020f510000100a04"), b"")
    assert pairs[2] == (bytes.fromhex("020e510000000104"), bytes.fromhex("7e05510000100a94"))
    # Delay of input A (register 64 = 0x40): 15 ns = 15·10^(1−10) s -> 0x100F.
    assert pairs[3] == (bytes.fromhex("020f400000100f04"), b"")
    rt = TranscriptTransport("ab", pairs[:5])
    drv2 = _abacus(rt).open()
    _session(drv2)
    assert rt.finished


def test_abacus_refusals_and_corruption() -> None:
    from qlab.drivers.tausand.abacus import WINDOW, request_frame
    from qlab.drivers.tausand.abacus_sim import AbacusSimulator

    dev = AbacusSimulator(None, "abacus")
    drv = _abacus(SimLinkTransport("ab", dev, timeout_s=0.2)).open()
    with pytest.raises(InstrumentError, match="sampling time 0.3 s: the device takes 1, 2, 5"):
        drv.set_sampling_time(0.3)
    with pytest.raises(InstrumentError, match="coincidence window 7 ns: the device takes 5–50000 ns in 5 ns"):
        drv.set_coincidence_window(7_000)
    # Writing a value the device does not take is ignored silently; the read-back reveals it.
    with pytest.raises(InstrumentError, match=r"did not accept a raw window \(register 81"):
        drv.write_register(WINDOW, 12 << 12 | 99, "a raw window")
    # A malformed frame gets no answer at all: a timeout that names the instrument.
    dev.receive(bytes.fromhex("020e510000000105"))
    assert dev.read_due() == b""
    with pytest.raises(InstrumentTimeout, match="ab: no answer"):
        drv.transport.write(bytes.fromhex("020e510000000105"))
        drv.transport.read_exact(2)
    # A reply whose checksum does not close to 0xFF is refused.
    bad = [(request_frame(0x0E, 81, 1), bytes.fromhex("7e05510000100a95"))]
    drv2 = _abacus(TranscriptTransport("ab", [(b"*IDN?", b"Tausand Abacus AB1004"), *bad])).open()
    with pytest.raises(ProtocolError, match="corrupt reply"):
        drv2.coincidence_window()


def _abacus_lab(cfg) -> None:
    from tests.simlab_helpers import ideal_fibres, no_afterpulses

    ideal_fibres(cfg)
    no_afterpulses(cfg)
    cfg["instruments"]["counter"] = {
        "driver": "tausand.abacus", "backend": "sim",
        "limits": {"coincidence_window_ps": {"min": 1000, "max": 100_000}},
        "settings": {"sampling_s": 0.1, "coincidence_window_ps": 5000, "delays_ps": {1: 15000, 2: 15000}}}
    for i, det in enumerate(["alice_H", "alice_V", "bob_H", "bob_V"]):
        party, port = det.split("_")
        cfg["instruments"][det]["channel"] = {"tagger": "counter", "input": i + 1, "role": f"{party}.{port}"}


def test_abacus_counts_follow_the_optics(make_lab) -> None:
    lab = make_lab(_abacus_lab, seed=95)
    lab["pump"].set_output(True)
    ab = lab["counter"]
    assert ab.sampling_time() == pytest.approx(0.1) and ab.coincidence_window() == 5000
    r1 = ab.read()
    r2 = ab.read()
    assert r2.data_id > r1.data_id and r2.sampling_s == pytest.approx(0.1)
    expected = lab.sim.expected_rates()
    det = lab.sim.detectors["alice_H"]
    rate = expected["singles_hz"]["alice_H"]
    mean = rate / (1 + rate * det.p.dead_time_ns * 1e-9) * 0.1
    assert abs(r2.single(1) - mean) < 4 * np.sqrt(mean)
    true_ac = expected["coincidences_hz"][("alice_H", "bob_H")] * 0.1
    assert abs(r2.pair(1, 3) - true_ac) < 4 * np.sqrt(true_ac) + 0.05 * true_ac  # dead-time loss ≲ 2 %
    assert r2.pair(1, 3) > 20 * max(r2.pair(1, 4), 1)
    # Turning Bob's analyzer half-wave plate by 45° swaps his H and V: the coincidences follow.
    lab["bob_analyzer"].move_absolute(45.0, "hwp")
    r3 = ab.read()
    assert r3.pair(1, 4) > 20 * max(r3.pair(1, 3), 1)
    assert abs(r3.pair(1, 4) - r2.pair(1, 3)) < 5 * np.sqrt(r2.pair(1, 3))
    snap = ab.snapshot()
    assert snap["delay_A"] == {"value": 15000, "unit": "ps"} and snap["sampling"]["unit"] == "s"


def test_abacus_read_waits_for_a_period_that_started_after_the_call(make_lab) -> None:
    from qlab.drivers.tausand.abacus import DATA_ID

    lab = make_lab(_abacus_lab, seed=96)
    ab = lab["counter"]
    before = ab.read_registers(DATA_ID, 1)[DATA_ID]
    assert ab.read().data_id >= before + 2
    latest = ab.read(wait_new=False)
    assert latest.data_id >= before + 2 and latest.sampling_s == pytest.approx(0.1)


def test_abacus_counts_on_board_even_when_read_slowly(make_lab) -> None:
    """In real time a slow reader must not lose counts: the device counts whether or not anyone polls."""
    import time

    lab = make_lab(_abacus_lab, seed=97, realtime=True)
    lab["pump"].set_output(True)
    ab = lab["counter"]
    ab.read(wait_new=False)
    time.sleep(0.6)  # several periods and more than the simulated taggers' 0.1 s backlog allowance
    r = ab.read(wait_new=False)
    det = lab.sim.detectors["alice_H"]
    rate = lab.sim.expected_rates()["singles_hz"]["alice_H"]
    mean = rate / (1 + rate * det.p.dead_time_ns * 1e-9) * 0.1
    assert abs(r.single(1) - mean) < 4 * np.sqrt(mean)


def test_abacus_refuses_models_with_another_register_map() -> None:
    from qlab.drivers.tausand.abacus_sim import AbacusSimulator

    class TwoInput(AbacusSimulator):
        idn = b"Tausand Abacus AB1502"

    with pytest.raises(ProtocolError, match="not a four-input AB1000-family"):
        _abacus(SimLinkTransport("ab", TwoInput(None, "abacus"), timeout_s=0.2)).open()
