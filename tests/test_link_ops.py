"""Issue 17 units (fast): the link state machine, detector drift, telemetry endpoint, scenario files and physics,
live QBER probes and the compensator model."""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from qlab.errors import ConfigError
from qlab.network.compensation import CompensatorModel, probe_qber
from qlab.network.config import OperationsSection, SloSection, load_network
from qlab.network.ops import LinkMonitor
from qlab.network.scenario import load_scenario, plan
from qlab.network.telemetry import LinkMetrics, NodeHttpServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "network.yaml"
SINGLES = {"H": 5000.0, "V": 5000.0, "D": 5000.0, "A": 5000.0}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _monitor(tmp_path: Path | None = None) -> tuple[LinkMonitor, list, Clock]:
    events: list[tuple[str, dict]] = []
    clock = Clock()
    mon = LinkMonitor(OperationsSection(), SloSection(min_key_rate_bps=100),
                      lambda k, d: events.append((k, d)), alarm_path=None if tmp_path is None else
                      tmp_path / "alarm.json", clock=clock)
    return mon, events, clock


def _block(n: int, qz: float = 0.01, qx: float = 0.01, committed: bool = True, sifted: int = 20000) -> dict:
    return {"block": n, "committed": committed, "duration_s": 5.0, "secret_bits": 5000 if committed else 0,
            "qber": {"Z": qz, "X": qx}, "sifted": {"Z": sifted // 2, "X": sifted // 2},
            "abort_reason": "" if committed else "QBER above the tolerated 8.0%"}


def _up(mon: LinkMonitor, clock: Clock) -> None:
    mon.on_event("session", {})
    for _ in range(6):
        clock.t += 1
        mon.on_event("rates", {"singles_hz": SINGLES})
    mon.on_event("block", _block(1))


def _states(events: list) -> list[str]:
    return [d["to"] for k, d in events if k == "state"]


def test_state_machine_outage_recovery_and_hysteresis() -> None:
    mon, events, clock = _monitor()
    assert mon.state == "STARTING"
    _up(mon, clock)
    assert _states(events) == ["SYNCING", "UP"]
    mon.on_light(400.0)  # fibre cut: 2 % of the 20 kHz baseline, seen by the fast check
    assert mon.state == "DOWN" and "no light" in mon.reason
    mon.on_light(15000.0)  # light back above light_back_ratio
    assert mon.state == "RECOVERING"
    mon.on_event("block", _block(2))  # its data began before the light was back: not yet a recovery
    assert mon.state == "RECOVERING"
    clock.t += 6.5  # a 5 s block taken entirely after the return (1 s processing slack)
    mon.on_event("block", _block(3))
    assert mon.state == "UP"
    mon.on_event("block", _block(3, qz=0.05))  # above qber_degraded (0.045): DEGRADED ...
    assert mon.state == "DEGRADED" and "QBER" in mon.reason
    mon.on_event("block", _block(4, qz=0.04))  # ... stays between the thresholds (hysteresis) ...
    assert mon.state == "DEGRADED"
    mon.on_event("block", _block(5, qz=0.02))  # ... and leaves below qber_ok (0.035)
    assert mon.state == "UP"
    mon.on_event("session_ended", {"reason": "connection reset"})
    assert mon.state == "UP"  # not yet: channel_lost_s (2 s) has not passed
    clock.t += 2.5
    assert mon.tick() == "DOWN" and "classical channel lost" in mon.reason
    mon.on_event("session", {})
    assert mon.state == "RECOVERING"
    mon.on_event("block", _block(6))
    assert mon.state == "UP"
    assert _states(events) == ["SYNCING", "UP", "DOWN", "RECOVERING", "UP", "DEGRADED", "UP", "DOWN", "RECOVERING",
                               "UP"]
    assert all(d["reason"] and d["time"] for k, d in events if k == "state")


def test_a_dark_block_takes_the_link_down_until_a_block_commits() -> None:
    mon, _, clock = _monitor()
    _up(mon, clock)
    mon.on_event("block", _block(2, committed=False, sifted=500))
    assert mon.state == "DOWN" and "no coincidences" in mon.reason
    mon.on_event("block", _block(3))  # key again, but from data that may predate the return
    assert mon.state == "RECOVERING"
    clock.t += 6.5
    mon.on_event("block", _block(4))
    assert mon.state == "UP"


def test_alarm_latches_until_an_operator_clears_it(tmp_path: Path) -> None:
    mon, events, clock = _monitor(tmp_path)
    _up(mon, clock)
    mon.raise_alarm("QBER Z 0.25 X 0.25 in both bases")
    assert mon.state == "ALARM"
    for n in range(2, 5):  # good blocks, light, a session: nothing clears it
        mon.on_event("block", _block(n))
        clock.t += 10
        mon.tick()
    assert mon.state == "ALARM"
    again, _, _ = _monitor(tmp_path)  # a restarted node keeps it (alarm.json)
    assert again.alarm is not None and again.decide()[0] == "ALARM"
    assert mon.clear_alarm("tester")
    assert mon.state == "RECOVERING" and not (tmp_path / "alarm.json").exists()
    mon.on_event("block", _block(9))
    assert mon.state == "UP"
    assert [k for k, _ in events].count("alarm_cleared") == 1


def test_detector_drift_is_flagged_and_cleared() -> None:
    mon, events, clock = _monitor()
    _up(mon, clock)
    mon.on_event("rates", {"singles_hz": {**SINGLES, "H": 2500.0}})  # one detector at half efficiency
    flags = [d for k, d in events if k == "detector_drift"]
    assert flags and flags[0]["port"] == "H" and flags[0]["kind"] == "efficiency drop"
    mon.on_event("rates", {"singles_hz": SINGLES})
    assert [d["port"] for k, d in events if k == "detector_drift_cleared"] == ["H"]
    mon.on_event("rates", {"singles_hz": {**SINGLES, "V": 12000.0}})
    assert [d for k, d in events if k == "detector_drift"][-1]["kind"] == "dark-count rise"


def test_metrics_endpoint_serves_link_series_and_clear_alarm() -> None:
    metrics = LinkMetrics("alice", "bob")
    metrics.on_event("state", {"to": "UP", "from": "SYNCING", "reason": "x"})
    metrics.on_event("rates", {"singles_hz": SINGLES})
    metrics.on_event("block", {**_block(1), "coincidence_rate_hz": 8000.0, "clock_residual_ps": 4.0})
    metrics.set_store_bits(5000)
    calls = []
    srv = NodeHttpServer(metrics, lambda: {"state": "UP"}, lambda who: (calls.append(who) or 200, {"cleared": True}))
    srv.start()
    try:
        text = urllib.request.urlopen(f"{srv.url}/metrics", timeout=5).read().decode()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert {"qlab_link_state", "qlab_link_qber_ratio", "qlab_link_secret_key_rate_bits_per_second",
                "qlab_link_key_store_bits", "qlab_link_committed_bits", "qlab_link_singles_rate_hertz"} <= set(fams)
        up = [s for s in fams["qlab_link_state"].samples if s.labels["state"] == "UP"]
        assert up[0].value == 1
        assert fams["qlab_link_secret_key_rate_bits_per_second"].samples[0].value == pytest.approx(1000.0)
        req = urllib.request.Request(f"{srv.url}/clear-alarm?operator=ops", method="POST")
        assert json.loads(urllib.request.urlopen(req, timeout=5).read())["cleared"] is True
        assert calls == ["ops"]
        tl = json.loads(urllib.request.urlopen(f"{srv.url}/timeline?since=0", timeout=5).read())
        assert tl and tl[-1]["singles_hz"] == pytest.approx(20000.0)
        assert srv.host == "127.0.0.1"
    finally:
        srv.stop()


def test_scenario_validation_names_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario: {name: x}\nevents:\n  - at_s: 3\n    fibre_cut: {duration_s: -1}\n"
                   "  - at_s: 5\n    detector: {name: nope, efficiency_scale: 0.5}\n"
                   "  - at_s: 6\n    eavesdropper: {duration_s: 3}\n    fibre_cut: {duration_s: 3}\n")
    with pytest.raises(ConfigError) as exc:
        load_scenario(bad, ["bob_H"])
    text = str(exc.value)
    assert "bad.yaml:4: events[0].fibre_cut.duration_s" in text
    assert "bad.yaml:7: events[2]" in text and "exactly one of" in text
    with pytest.raises(ConfigError, match=r"bad2.yaml:3: events\[0\].detector.name: unknown detector 'nope'"):
        bad2 = tmp_path / "bad2.yaml"
        bad2.write_text("events:\n  - at_s: 5\n    detector: {name: nope, efficiency_scale: 0.5}\n")
        load_scenario(bad2, ["bob_H"])
    for f in sorted((ROOT / "scenarios").glob("*.yaml")):  # the shipped ones are valid
        desc = load_network(EXAMPLE)
        dets = [n for lab in desc.node_labs.values() for n in lab.config.instruments if lab.kind(n) == "detector"]
        assert load_scenario(f, dets).events
    names = {f.stem for f in (ROOT / "scenarios").glob("*.yaml")}
    assert {"fibre-cut", "polarization-drift", "loss-ramp", "eavesdropper", "classical-outage"} <= names


def test_scenario_plan_drives_physics_and_proxy(tmp_path: Path) -> None:
    from qlab.config import load_config
    from qlab.network.emulator import emulator_lab_dict
    from qlab.sim.model import SimLab
    from qlab.sim.network_physics import NetworkPhysics

    desc = load_network(EXAMPLE)
    sim = SimLab(load_config("emu", text=yaml.safe_dump(emulator_lab_dict(desc), sort_keys=False)), realtime=False)
    phys = NetworkPhysics(sim, "bob")
    f = tmp_path / "s.yaml"
    f.write_text("events:\n  - {at_s: 1, fibre_cut: {duration_s: 2}}\n  - {at_s: 4, loss_ramp: {db_per_s: 1, "
                 "duration_s: 2, hold_s: 1}}\n  - {at_s: 8, eavesdropper: {duration_s: 1}}\n"
                 "  - {at_s: 8, classical_outage: {duration_s: 3}}\n"
                 "  - {at_s: 9, detector: {name: bob_H, dark_count_hz: 9000}}\n")

    class Proxy:
        outages: list[float] = []

        def outage(self, s: float) -> None:
            self.outages.append(s)

    proxy = Proxy()
    base = phys.base_transmission
    seen = []
    for a in plan(load_scenario(f), phys, proxy):
        a.apply()
        seen.append((a.t_s, a.record["event"], a.record["phase"], sim.optics.fibre_transmission["bob"],
                     sim.eavesdropper))
    cut = [s for s in seen if s[1] == "fibre_cut"]
    assert cut[0][3] == 0.0 and cut[1][3] == pytest.approx(base)
    peak = max((s for s in seen if s[1] == "loss_ramp"), key=lambda s: s[0] if s[2] == "step" else -1)
    assert peak[3] == pytest.approx(base * 10 ** (-0.2))  # 2 dB at the ramp's end
    assert [s for s in seen if s[1] == "loss_ramp"][-1][3] == pytest.approx(base)  # removed after hold_s
    assert [s[4] for s in seen if s[1] == "eavesdropper"] == ["intercept_resend", "none"]
    assert proxy.outages == [3.0]
    assert sim.detectors["bob_H"].p.dark_count_hz == 9000


def test_probe_qber_and_compensator_model_undo_a_fibre_rotation() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    t = np.sort(rng.integers(0, 10**12, n))
    pa = rng.integers(0, 4, n).astype(np.uint8)
    pb = pa.copy()
    flip = rng.random(n) < 0.1  # 10 % errors
    pb[flip] ^= 1
    r = probe_qber(t + 100, pb, t, pa, 2000)
    assert r.coincidences == n
    assert r.qber_z == pytest.approx(0.1, abs=0.03) and r.qber_x == pytest.approx(0.1, abs=0.03)
    assert r.counts.sum() == n

    model = CompensatorModel({"qwp1": (0.25, 0.0), "hwp": (0.5, 0.0), "qwp2": (0.25, 0.0)}, "bob")
    fibre = model._rotation(np.array([0.3, 0.8, 0.2]) * math.radians(50))  # noqa: SLF001
    start = {"qwp1": 5.0, "hwp": -10.0, "qwp2": 20.0}
    p = model.predicted(fibre, start, 0.98)
    counts = rng.multinomial(3000, p.ravel()).reshape(4, 4)

    def qber(setting: dict[str, float]) -> float:
        q = model.predicted(fibre, setting, 0.98)
        return max((q[0, 1] + q[1, 0]) / (q[0, 0] + q[1, 1] + q[0, 1] + q[1, 0]),
                   (q[2, 3] + q[3, 2]) / (q[2, 2] + q[3, 3] + q[2, 3] + q[3, 2]))

    assert qber(start) > 0.1
    cands = model.candidates(counts, start)
    assert min(qber(c) for c in cands[:2]) < 0.03  # the visibility floor is 1 %


def test_operations_thresholds_need_a_hysteresis_band(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("qber_ok: 0.035", "qber_ok: 0.05")
    bad = tmp_path / "network.yaml"
    bad.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), start=1) if s.strip().startswith("qber_ok:"))
    with pytest.raises(ConfigError, match=rf"network.yaml:{line}: operations.qber_ok: must be below"):
        load_network(bad)


def test_event_sequence_numbers_keep_rising_past_the_retained_window() -> None:
    from qlab.network.telemetry import EVENTS_KEPT

    metrics = LinkMetrics("alice", "bob")
    for k in range(EVENTS_KEPT + 50):
        metrics.on_event("alarm", {"reason": f"a{k}"})
    tail = metrics.events_since(EVENTS_KEPT + 45)
    assert [e["seq"] for e in tail] == list(range(EVENTS_KEPT + 45, EVENTS_KEPT + 50))
    assert [e["reason"] for e in tail][-1] == f"a{EVENTS_KEPT + 49}"
    assert len(metrics.events_since(0)) == EVENTS_KEPT  # the oldest were dropped, the rest keep their numbers
    assert metrics.events_since(EVENTS_KEPT + 50) == []
