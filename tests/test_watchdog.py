"""Instrument watchdog: a laser controller that dies or hangs mid-run aborts the run within about a second,
its state is reported UNKNOWN (never off), and the run file keeps the fault and the last known settings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qlab.errors import InstrumentError
from qlab.instruments.watchdog import InstrumentFault, Watchdog, WatchPolicy, policy_for
from qlab.storage.reader import RunReader
from tests.fault_rig import (
    HangingProxy,
    dlcpro_pump_config,
    served_dlcpro,
    start_run,
    wait_exit,
    wait_for_tags,
)

FAULT_EXIT_BOUND_S = 5.0  # generous for a loaded CI machine; measured ~0.3 s (killed) / ~0.7 s (hung)


def _check_faulted_file(path: Path) -> None:
    with RunReader(path) as r:
        assert r.summary()["complete"] is False
        results = {x["name"]: x["data"] for x in r.results()}
        settings = r.settings_log()
    assert results["error"]["type"] == "InstrumentFault" and results["error"]["instrument"] == "pump"
    assert results["fault"]["instrument"] == "pump"
    assert results["laser_states"]["pump"].startswith("unknown")  # never reported as off
    last = {x["instrument"]: x["settings"] for x in settings if x.get("source") == "last_known"}
    assert last["pump"]["laser_state"]["value"].startswith("unknown")
    assert last["pump"]["current_set"]["value"] == pytest.approx(0.12)  # as last written/read (cache)
    assert {"tagger", "alice_analyzer"} <= set(last)


@pytest.mark.parametrize("failure", ["killed", "hung"])
def test_laser_controller_failing_mid_run_aborts_the_run(tmp_path: Path, failure: str) -> None:
    with served_dlcpro() as (sim, port):
        proxy = HangingProxy(port) if failure == "hung" else None
        try:
            cfg = dlcpro_pump_config(tmp_path / "lab.yaml", proxy.port if proxy else port, realtime=True)
            run = start_run(cfg, tmp_path / "data", "chsh", "-p", "integration_s=8", "-p",
                            "measure_visibility=false")
            try:
                path = wait_for_tags(tmp_path / "data", 500, timeout_s=60)
                time.sleep(0.5)
                t_fault = time.monotonic()
                if proxy is not None:
                    proxy.hang()
                else:
                    sim.kill()
                rc, t_exit, err = wait_exit(run, 30)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.wait(10)
        finally:
            if proxy is not None:
                proxy.close()
    print(f"{failure}: fault -> exit {t_exit - t_fault:.3f} s")
    assert rc == 4, err
    assert t_exit - t_fault < FAULT_EXIT_BOUND_S
    lines = [ln for ln in err.splitlines() if ln.strip() and "%" not in ln]
    assert len(lines) == 1 and lines[0].startswith("instrument fault: pump:"), err
    assert "pump: state UNKNOWN" in lines[0] and "switched off" not in err
    _check_faulted_file(path)


def test_lasers_off_reports_an_unreachable_laser_as_unknown(make_lab) -> None:
    lab = make_lab()
    lab["pump"].set_output(True)

    def broken(*a, **k):
        raise OSError("Broken pipe")

    lab["pump"].instrument._set_output = broken
    failed = lab.lasers_off()
    assert failed == ["pump"]
    assert lab.laser_states["pump"].startswith("unknown") and "Broken pipe" in lab.laser_states["pump"]
    event = lab.faults[-1]  # the OSError was a link failure: reported once as a fault
    assert event["instrument"] == "pump" and not event["lasers_off"] and event["unreachable_lasers"] == ["pump"]


def test_watch_policies() -> None:
    from qlab.config.schema import InstrumentConfig

    cfg = InstrumentConfig(driver="toptica.dlcpro", backend="127.0.0.1:1")
    assert policy_for("laser", cfg, in_process_fast_sim=False) == WatchPolicy(0.2, 0.4, False)
    assert policy_for("polarization", cfg, False) == WatchPolicy(2.0, 3.0, False)
    assert policy_for("laser", InstrumentConfig(driver="x"), in_process_fast_sim=True) is None
    off = InstrumentConfig(driver="x", watchdog_period_s=0)
    assert policy_for("laser", off, False) is None
    custom = InstrumentConfig(driver="x", watchdog_period_s=0.1, watchdog_timeout_s=0.3, reconnect=True)
    assert policy_for("laser", custom, True) == WatchPolicy(0.1, 0.3, True)


def test_watchdog_faults_and_reconnects(make_lab) -> None:
    lab = make_lab()
    ctl = lab["alice_analyzer"]
    inst = ctl.instrument
    state = {"fail": 0}
    real_status = inst.status

    def flaky_status():
        if state["fail"]:
            state["fail"] -= 1
            raise InstrumentError(inst.name, "no answer")
        return real_status()

    inst.settings_table = lambda: []  # health_query falls back to status()
    inst.status = flaky_status
    faults: list[InstrumentFault] = []
    # Without reconnect: one failed check is a fault, reported once.
    state["fail"] = 1
    wd = Watchdog({"alice_analyzer": ctl}, {"alice_analyzer": WatchPolicy(0.02, 1.0)}, faults.append).start()
    try:
        deadline = time.monotonic() + 5
        while not faults and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        wd.stop()
    assert len(faults) == 1 and faults[0].instrument == "alice_analyzer" and "no answer" in str(faults[0])
    # With reconnect: the link is reopened and the instrument watched on, no fault.
    faults.clear()
    state["fail"] = 1
    wd = Watchdog({"alice_analyzer": ctl}, {"alice_analyzer": WatchPolicy(0.02, 1.0, reconnect=True)},
                  faults.append).start()
    try:
        deadline = time.monotonic() + 5
        while not wd.reconnects and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
    finally:
        wd.stop()
    assert wd.reconnects and not faults
    assert ctl.position("hwp") == pytest.approx(ctl.position("hwp"))  # answers after the reopen


def test_hung_worker_releases_waiting_callers(make_lab) -> None:
    """A caller stuck behind a hung call gets the watchdog's fault at once, not after the transport timeout."""
    import threading

    lab = make_lab()
    pump = lab["pump"]
    release = threading.Event()
    fut = pump.submit(lambda inst: release.wait(10))  # the worker is now stuck in a call
    time.sleep(0.05)
    fault = InstrumentFault("pump", "not answering")
    pump.mark_hung(fault)
    t0 = time.monotonic()
    with pytest.raises(InstrumentFault):
        pump.output()
    assert time.monotonic() - t0 < 1.0
    assert pump.busy_for_s() > 0
    release.set()
    fut.result(5)
    assert pump.output() in (True, False)  # served again once the stuck call returned
