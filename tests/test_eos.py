"""Single Quantum Eos: JSON transcript and live simulator, error labels, bias-current coupling, counts port."""

from __future__ import annotations

import json

import pytest

from qlab.config.schema import Limit
from qlab.errors import InstrumentError, LimitError
from qlab.instruments.limits import Limits
from qlab.transport.simlink import SimLinkTransport
from qlab.transport.transcript import TranscriptTransport
from tests.transcripts import pairs_from_log

PROPS = {"NumberOfDetectors": 8, "BiasCurrent": [14.0] * 8, "TriggerLevel": [150.0] * 8, "DetectorEnable": True,
         "MeasurementPeriod": 100}
NEW_BIAS = [14.0, 12.5, 14.0, 14.0, 14.0, 14.0, 14.0, 14.0]


def _msg(obj) -> bytes:
    return json.dumps(obj).encode()


SESSION = [
    (_msg({"request": "labelProps", "value": "None"}), _msg({"label": "labelProps", "value": PROPS}) + b"\x17"),
    (_msg({"request": "labelProps", "value": "None"}), _msg({"label": "labelProps", "value": PROPS}) + b"\x17"),
    (_msg({"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": NEW_BIAS}),
     _msg({"label": "BiasCurrent", "value": NEW_BIAS}) + b"\x17"),
]


def _drv(transport, **kw):
    from qlab.drivers.singlequantum.eos import EosSNSPD

    return EosSNSPD("snspd", transport=transport, limits=Limits("snspd", {"bias_current_ua": Limit(max=18)}),
                    options={"address": 2}, **kw)


@pytest.mark.parametrize("backend", ["transcript", "simulator"])
def test_eos_session(backend: str) -> None:
    from qlab.drivers.singlequantum.eos_sim import EosSimulator

    if backend == "transcript":
        tr = TranscriptTransport("snspd", SESSION, read_termination=b"\x17")
        drv = _drv(tr).open()
        drv.set_bias_current(12.5)
        assert tr.finished
    else:
        tr = SimLinkTransport("snspd", EosSimulator(None, "eos", {"address": 2}), read_termination=b"\x17")
        tr.log = []
        drv = _drv(tr).open()
        drv.set_bias_current(12.5)
        assert pairs_from_log(tr.log) == SESSION
        assert drv.bias_current_ua() == 12.5


def test_eos_errors() -> None:
    from qlab.drivers.singlequantum.eos_sim import EosSimulator

    drv = _drv(SimLinkTransport("snspd", EosSimulator(None, "eos", {"address": 2}), read_termination=b"\x17"),
               ).open()
    with pytest.raises(InstrumentError, match="period must be"):
        drv.set_measurement_period_ms(5)
    with pytest.raises(InstrumentError, match="unknown command"):
        drv._exchange({"command": "SelfDestruct", "value": 1})
    with pytest.raises(LimitError):
        drv.set_bias_current(25.0)


def test_eos_bias_current_and_counts_in_the_lab(make_lab) -> None:
    def cfg(c):
        c["instruments"]["bob_H"].update(driver="singlequantum.eos", address=1,
                                         limits={"bias_current_ua": {"max": 18}})
    lab = make_lab(cfg, seed=95)
    lab["pump"].set_output(True)
    spd = lab["bob_H"]
    ch = lab.roles()["bob.H"][1]

    def rate() -> float:
        chunk = lab["tagger"].acquire(0.3)
        return (chunk.channels == ch).sum() / chunk.duration_s

    nominal = rate()
    assert spd.count_rate_hz() == pytest.approx(nominal, rel=0.1)
    spd.set_bias_current(9.0)  # well below the plateau
    assert rate() < 0.3 * nominal
    spd.set_bias_current(17.0)  # above switching: the wire latches
    assert rate() < 0.01 * nominal + 500
    spd.set_bias_current(14.0)
    spd.set_enabled(False)
    assert rate() < 0.01 * nominal
