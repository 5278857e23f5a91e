"""The safety envelope and the one-worker-per-instrument concurrency model."""

from __future__ import annotations

import threading

import pytest

from qlab.errors import InterlockError, LimitError


def test_laser_setpoint_above_limit_raises_and_sends_nothing(make_lab) -> None:
    lab = make_lab()
    pump = lab["pump"]
    pump.instrument.transport.log = log = []
    with pytest.raises(LimitError) as info:
        pump.set_current(0.25)
    assert log == []  # not a single byte went to the device
    assert "pump" in str(info.value) and "current_a" in str(info.value) and "0.2" in str(info.value)
    assert pump.current_setpoint() == pytest.approx(0.12)
    with pytest.raises(LimitError):
        pump.set_temperature(50.0)
    with pytest.raises(LimitError):
        pump.set_current(float("nan"))


def test_controller_travel_limit(make_lab) -> None:
    lab = make_lab()
    ctl = lab["alice_analyzer"]
    ctl.instrument.transport.log = log = []
    with pytest.raises(LimitError):
        ctl.move_absolute(800.0)
    assert log == []


def test_lasers_off_on_close_and_fault(make_lab) -> None:
    lab = make_lab()
    lab["pump"].set_output(True)
    assert lab.sim.lasers["pump"]["on"]
    # An instrument that stops answering: the lab reports it and switches the lasers off.
    dev = lab.sim.device_sims["bob_analyzer"]
    dev.handle = lambda: dev.inbuf.clear()  # the device goes silent
    events = []
    lab.fault_listeners.append(events.append)
    with pytest.raises(Exception, match="no answer"):
        lab["bob_analyzer"].position("hwp")
    assert events and events[0]["instrument"] == "bob_analyzer" and events[0]["lasers_off"]
    assert not lab.sim.lasers["pump"]["on"]
    assert not lab["pump"].output()


def test_interlock_forces_output_off(make_lab) -> None:
    lab = make_lab()
    dev = lab.sim.device_sims["pump"]
    lab["pump"].set_output(True)
    dev.set_interlock(closed=False)
    assert not lab["pump"].output()
    assert lab["pump"].protection()["interlock"]
    assert lab.sim.pump_power_mw == 0.0
    with pytest.raises(InterlockError):
        lab["pump"].set_output(True)
    dev.set_interlock(closed=True)
    lab["pump"].set_output(True)
    assert lab.sim.pump_power_mw > 0


def test_two_threads_never_interleave(make_lab) -> None:
    """Hammer one instrument from two threads: every reply must belong to its own request."""
    lab = make_lab()
    comp = lab["bob_compensator"]
    comp.move_absolute(10.0, "qwp1")
    comp.move_absolute(250.0, "hwp")
    transport = comp.instrument.transport
    transport.log = log = []
    errors: list[BaseException] = []

    def hammer(axis: str, expected: float) -> None:
        try:
            for _ in range(150):
                assert comp.position(axis) == pytest.approx(expected, abs=0.01)
                comp.call("status_code", axis)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=a) for a in (("qwp1", 10.0), ("hwp", 250.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # Strict alternation on the wire: each write is followed by its reply from the same address.
    assert len(log) == 4 * 150 * 2
    for (kw, w), (kr, r) in zip(log[::2], log[1::2], strict=True):
        assert kw == "w" and kr == "r"
        assert r[:1] == w[:1]


def test_laser_sent_off_when_switching_on_fails_after_the_command(make_lab, monkeypatch) -> None:
    from qlab.errors import ProtocolError

    lab = make_lab()
    inst = lab["pump"].instrument

    def garbled() -> bool:
        raise ProtocolError("pump", "garbled OUTP? reply")

    monkeypatch.setattr(inst, "output", garbled)  # the on command went out; its check reads garbage
    with pytest.raises(ProtocolError):
        inst.set_output(True)
    monkeypatch.undo()
    assert inst.output() is False  # the device itself was switched off again, not only the cache
    assert inst.cache.get("output").value is False


def test_a_link_failure_after_a_reconnect_is_reported_again(make_lab) -> None:
    """A link fault is reported once (the lasers-off it sends may fail on the same link); once the watchdog
    has reconnected the instrument, its next failure is a new fault: lasers off again."""
    from qlab.errors import InstrumentTimeout
    from qlab.instruments.watchdog import Watchdog

    lab = make_lab()
    handle = lab["alice_analyzer"]

    def link_dies(inst) -> None:
        raise InstrumentTimeout(inst.name, "no answer")

    with pytest.raises(InstrumentTimeout):
        handle.call(link_dies, timeout=5)
    with pytest.raises(InstrumentTimeout):
        handle.call(link_dies, timeout=5)  # the same fault: not reported twice
    assert [f["instrument"] for f in lab.faults] == ["alice_analyzer"]
    assert Watchdog(lab.handles, {}, lab.report_fault)._reconnect(handle)
    with pytest.raises(InstrumentTimeout):
        handle.call(link_dies, timeout=5)
    assert [f["instrument"] for f in lab.faults] == ["alice_analyzer", "alice_analyzer"]
    assert all(f["lasers_off"] for f in lab.faults)
