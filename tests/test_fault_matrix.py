"""Fault matrix: every fault kind x every instrument class on the simulated lab, hit while a procedure runs.

For each cell: a typed error naming the faulted instrument reaches the caller; the lab's safe state holds
(the simulated pump is off, or the lab reports it could not be switched off when the pump itself is the
faulted instrument); the run file is closed incomplete and holds every tag recorded before the fault.
Tagger overflow is reported by the device's own means (gaps in the file), not as an error.
"""

from __future__ import annotations

from typing import Any

import pytest

from qlab.errors import (
    InstrumentDisconnected,
    InstrumentError,
    InstrumentTimeout,
    ProtocolError,
    QlabError,
)
from qlab.procedures.engine import Procedure, RunContext, RunEngine
from qlab.procedures.measure import integrate, light_on
from qlab.storage.reader import RunReader

INTEGRATION_S = 0.02

# instrument class -> (instrument name in the test lab, call that reaches the device)
TARGETS: dict[str, tuple[str, Any]] = {
    "laser": ("pump", lambda h: h.set_current(0.1)),
    "polarization": ("alice_analyzer", lambda h: h.move_absolute(20.0)),
    "detector": ("alice_H", lambda h: h.set_dead_time(1000.0)),
    "counter": ("counter", lambda h: h.set_coincidence_window(5000)),
    "tagger": ("tagger", None),  # reached by the acquisition itself
}
KINDS = ("silent", "disconnect", "garbage", "truncated", "device-error", "overflow")
EXPECTED: dict[str, tuple[type, ...]] = {
    "silent": (InstrumentTimeout,),
    "disconnect": (InstrumentDisconnected,),
    "garbage": (ProtocolError,),
    "truncated": (ProtocolError, InstrumentTimeout),  # a cut line never completes; a cut buffer is corrupt
    "device-error": (InstrumentError,),
}


def _fault_lab(cfg: dict[str, Any]) -> None:
    """The default lab with a digital detector (ID120 on alice.H) and a coincidence counter added."""
    cfg["instruments"]["alice_H"] = {"driver": "idquantique.id120", "backend": "sim",
                                     "channel": {"tagger": "tagger", "input": 1, "role": "alice.H"}}
    cfg["instruments"]["counter"] = {"driver": "tausand.abacus", "backend": "sim"}


class FaultProbe(Procedure):
    """Records an integration, then injects the fault and uses the faulted instrument (or acquires again)."""

    name = "faultprobe"

    def __init__(self, target: str, kind: str, call: Any, **values: Any):
        super().__init__(**values)
        self.target, self.kind, self.call = target, kind, call
        self.before_fault: int | None = None

    def execute(self, ctx: RunContext) -> dict[str, Any]:
        lab = ctx.lab
        light_on(lab)
        first = integrate(ctx, INTEGRATION_S, keep_chunk=True)
        self.before_fault = len(first.chunk)
        lab.sim.device_sims[self.target].inject(self.kind)
        if self.call is not None:
            self.call(lab[self.target])
        second = integrate(ctx, INTEGRATION_S, keep_chunk=True)
        return {"tags": len(first.chunk) + len(second.chunk)}


def _pump_on(lab) -> bool:
    return bool(lab.sim.optics.lasers["pump"]["on"])


CELLS = [(cls, kind) for cls in TARGETS for kind in KINDS if kind != "overflow" or cls == "tagger"]


@pytest.mark.parametrize(("cls", "kind"), CELLS)
def test_fault_matrix(make_lab, cls: str, kind: str) -> None:
    lab = make_lab(_fault_lab)
    target, call = TARGETS[cls]
    probe = FaultProbe(target, kind, call)
    engine = RunEngine(lab)
    path = engine.new_run_path("faultprobe")
    try:
        if kind == "overflow":
            results = engine.run(probe, path=path)
            with RunReader(path) as r:
                assert r.complete
                assert len(r.gaps()) >= 1  # the lost interval is in the file as a gap
                assert r.n_tags() == results["tags"] == probe.before_fault  # nothing invented after the loss
            return
        with pytest.raises(QlabError) as info:
            engine.run(probe, path=path)
        err = info.value
        assert isinstance(err, EXPECTED[kind]), f"{type(err).__name__}: {err}"
        if kind == "device-error":
            assert not isinstance(err, InstrumentTimeout)
        assert err.instrument == target and target in str(err)
        # safe state: the pump is off, or (when the pump is what failed) the lab does not claim it is
        if _pump_on(lab):
            assert target == "pump" and lab.lasers_off() == ["pump"]
        if kind in ("silent", "disconnect"):  # communication faults reach the lab's fault handler
            assert any(f["instrument"] == target for f in lab.faults)
        with RunReader(path) as r:
            assert not r.complete
            assert r.n_tags() == probe.before_fault > 0  # everything recorded before the fault is in the file
            assert any(res.get("name") == "error" or "error" in res for res in r.results())
    finally:
        lab.sim.device_sims[target].clear_fault()


def test_laser_fault_other_laser_still_off(make_lab) -> None:
    """A polarization controller that goes silent mid-run: the (healthy) pump is switched off by the fault path."""
    lab = make_lab(_fault_lab)
    light_on(lab)
    assert _pump_on(lab)
    lab.sim.device_sims["alice_analyzer"].inject("silent")
    with pytest.raises(InstrumentTimeout, match="alice_analyzer"):
        lab["alice_analyzer"].move_absolute(15.0)
    assert not _pump_on(lab)
    assert lab.faults and lab.faults[-1]["lasers_off"]
    lab.sim.device_sims["alice_analyzer"].clear_fault()
