"""ID Quantique ID120: SCPI-like transcript and live simulator, refusals, bias -> efficiency coupling."""

from __future__ import annotations

import pytest

from qlab.config.schema import Limit
from qlab.errors import InstrumentError, LimitError
from qlab.instruments.limits import Limits
from qlab.transport.simlink import SimLinkTransport
from qlab.transport.transcript import TranscriptTransport
from tests.transcripts import pairs_from_log

OK = b"0,\"No error\"\n"
SESSION = [
    (b"*IDN?\n", b"IDQ,ID120,0012345,2.1.0 (simulated)\n"),
    (b"BIAS:VOLTAGE 200000000\n", b""),
    (b"SYST:ERR?\n", b'+0,"No error"\n'),
    (b"DEADTIME:TIME 1000\n", b""),
    (b"SYST:ERR?\n", b'+0,"No error"\n'),
    (b"BIAS:VOLTAGE?\n", b"200000000\n"),
]


def _drv(transport, limits=None):
    from qlab.drivers.idquantique.id120 import ID120

    return ID120("spd", transport=transport, limits=Limits("spd", limits or {"bias_v": Limit(max=220)}))


def _session(drv) -> None:
    drv.open()
    drv.set_bias(200.0)
    drv.set_dead_time(1000.0)
    assert drv.bias_v() == pytest.approx(200.0)


@pytest.mark.parametrize("backend", ["transcript", "simulator"])
def test_id120_session(backend: str) -> None:
    from qlab.drivers.idquantique.id120_sim import ID120Simulator

    if backend == "transcript":
        tr = TranscriptTransport("spd", SESSION, write_termination=b"\n")
        _session(_drv(tr))
        assert tr.finished
    else:
        tr = SimLinkTransport("spd", ID120Simulator(None, "id120"), write_termination=b"\n")
        tr.log = []
        _session(_drv(tr))
        assert pairs_from_log(tr.log) == SESSION


def test_id120_refusals() -> None:
    from qlab.drivers.idquantique.id120_sim import ID120Simulator

    drv = _drv(SimLinkTransport("spd", ID120Simulator(None, "id120"), write_termination=b"\n"),
               {"bias_v": Limit(max=260)}).open()
    with pytest.raises(InstrumentError, match="-222"):
        drv.set_bias(255.0)  # inside qlab's limit, beyond the device's 250 V
    drv.transport.write_line("DEADTIME:TIME 1001")  # not a multiple of the 40 ns step
    assert drv.transport.query_line("SYST:ERR?").startswith("-222")
    drv.transport.write_line("FOO:BAR 1")
    assert drv.transport.query_line("SYST:ERR?").startswith("-113")
    with pytest.raises(LimitError):
        _drv(SimLinkTransport("spd", ID120Simulator(None, "id120"), write_termination=b"\n")).open().set_bias(230)


def test_id120_bias_sets_efficiency_in_the_lab(make_lab) -> None:
    def cfg(c):
        c["instruments"]["alice_H"].update(driver="idquantique.id120", limits={"bias_v": {"max": 240}})
    lab = make_lab(cfg, seed=71)
    lab["pump"].set_output(True)
    spd = lab["alice_H"]
    ch = lab.roles()["alice.H"][1]

    def rate() -> float:
        chunk = lab["tagger"].acquire(0.3)
        return (chunk.channels == ch).sum() / chunk.duration_s

    high = rate()
    assert spd.count_rate_hz() == pytest.approx(high, rel=0.05)
    spd.set_bias(170.0)  # 10 V above breakdown: far less efficient
    assert rate() < 0.6 * high
    spd.set_efficiency(0.3)
    assert spd.efficiency() == pytest.approx(0.3, abs=0.02)
    spd.set_enabled(False)
    assert rate() < 0.01 * high
