"""Issue 17, Must show: degraded-link scenarios on the emulator with the nodes as separate processes (loopback).

Each test starts the emulator with a scenario (its classical proxy between the nodes), the two nodes with 3 s
blocks, starts the timeline once both nodes are UP, and stops every process in ``finally`` (the context
manager). Times of state changes come from the nodes' run files (each transition is recorded with its time),
times of the causes from the emulator's scenario log.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from qlab.network.launcher import NetworkProcesses, compare_stores, prepare_config
from qlab.network.node import clear_alarm
from qlab.network.report import read_node
from qlab.network.scenario import read_event_log

ROOT = Path(__file__).resolve().parent.parent
FAST = {"key_management": {"block_duration_s": 3.0, "sync_duration_s": 1.0}}
UP_TIMEOUT_S = 40.0


def _start(tmp_path: Path, scenario: str) -> NetworkProcesses:
    cfg = prepare_config(ROOT / "network.yaml", tmp_path, FAST)
    (tmp_path / "scenario.yaml").write_text(scenario)
    net = NetworkProcesses(cfg, tmp_path)
    try:
        emu = net.start_emulator(tmp_path / "scenario.yaml")
        net.start_node("alice")
        net.start_node("bob", peer=emu["classical_proxy"]["address"])
        net.wait_for(lambda: net.state("alice") == "UP" and net.state("bob") == "UP", UP_TIMEOUT_S, "both nodes UP")
    except BaseException:
        net.stop_all()
        raise
    return net


def _events(net: NetworkProcesses, kind: str, phase: str) -> list[dict]:
    if not net.scenario_log.exists():
        return []
    return [e for e in read_event_log(net.scenario_log) if e.get("event") == kind and e.get("phase") == phase]


def _history(net: NetworkProcesses, name: str) -> dict:
    (path,) = net.run_files(name)
    return read_node(path)


def _first(states: list, to: str, after: float) -> float | None:
    return next((t for t, s, _ in states if s == to and t >= after), None)


def _stop_and_compare(net: NetworkProcesses) -> dict:
    net.stop("alice")
    net.stop("bob")
    cmp = compare_stores(net.keys("alice"), net.keys("bob"))
    assert cmp["same_ids"], cmp
    assert cmp["keys_identical"], "the two key stores hold different keys under the same IDs"
    return cmp


def test_fibre_cut_down_within_2s_up_within_10s_and_metrics(tmp_path: Path) -> None:
    net = _start(tmp_path, "events:\n  - {at_s: 2, fibre_cut: {duration_s: 10}}\n")
    try:
        net.start_scenario()
        # /metrics of a running node, parsed with prometheus_client's own text parser.
        url = net.status("alice")["http"]["url"]
        assert url.startswith("http://127.0.0.1:")
        text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        link = {n for n in fams if n.startswith("qlab_link_")}
        assert {"qlab_link_state", "qlab_link_qber_ratio", "qlab_link_secret_key_rate_bits_per_second",
                "qlab_link_clock_offset_residual_seconds", "qlab_link_key_store_bits", "qlab_link_committed_bits",
                "qlab_link_singles_rate_hertz", "qlab_link_coincidence_rate_hertz"} <= link
        state = {s.labels["state"]: s.value for s in fams["qlab_link_state"].samples}
        assert state["UP"] == 1 and sum(state.values()) == 1
        assert fams["qlab_link_committed_bits"].samples[0].value > 0
        net.wait_for(lambda: bool(_events(net, "fibre_cut", "end")), 30, "the fibre's return")
        back = _events(net, "fibre_cut", "end")[0]["time"]
        net.wait_for(lambda: all((net.status(n) or {}).get("state") == "UP"
                                 and net.status(n)["link"]["since"] > back for n in ("alice", "bob")),
                     25, "both nodes UP after the fibre's return")
        _stop_and_compare(net)
        cut = _events(net, "fibre_cut", "start")[0]["time"]
        bob = _history(net, "bob")
        down = _first(bob["states"], "DOWN", cut)
        assert down is not None and down - cut <= 2.0, f"DOWN {down and down - cut:.2f} s after the cut"
        for name in ("alice", "bob"):
            h = bob if name == "bob" else _history(net, name)
            up = _first(h["states"], "UP", back)
            assert up is not None and up - back <= 10.0, f"{name} UP {up and up - back:.1f} s after the return"
            reasons = [r for t, s, r in h["states"] if cut <= t <= back + 10]
            assert reasons and all(reasons), h["states"]
    finally:
        net.stop_all()


def test_polarization_burst_is_recompensated_then_classical_outage_keeps_stores_consistent(tmp_path: Path) -> None:
    net = _start(tmp_path, "events:\n  - {at_s: 2, polarization_rotate: {angle_deg: 40, axis: [0, 1, 0], over_s: 1}}\n"
                           "  - {at_s: 24, classical_outage: {duration_s: 5}}\n")
    try:
        net.start_scenario()
        threshold = net.desc.config.operations.recompensate_qber

        def corrected() -> bool:
            h = _history_live(net, "alice")
            ends = [c for c in h if c.get("kind") == "compensation" and c.get("phase") == "end"]
            return bool(ends) and any(b.get("kind") == "block" and b.get("committed") and b["time"] > ends[0]["time"]
                                      for b in h)

        net.wait_for(corrected, 40, "a re-compensation and a committed block after it")
        net.wait_for(lambda: bool(_events(net, "classical_outage", "end")), 30, "the classical outage's end")
        restored = _events(net, "classical_outage", "end")[0]["time"]
        net.wait_for(lambda: all((net.status(n) or {}).get("state") == "UP"
                                 and net.status(n)["link"]["since"] > restored for n in ("alice", "bob")),
                     25, "both nodes UP after the classical outage")
        before = net.committed("alice")
        net.wait_for(lambda: net.committed("alice") > before and net.committed("bob") > before, 20,
                     "a block after the outage on both nodes")
        _stop_and_compare(net)
        h = _history(net, "alice")
        burst = _events(net, "polarization_rotate", "start")[0]["time"]
        high = [b for b in h["blocks"] if b["time"] > burst
                and max(v for v in b["qber"].values() if v is not None) > threshold]
        assert high, "the burst did not push QBER past the threshold"
        (comp,) = [c for c in h["compensations"] if c.get("phase") == "end"][:1]
        assert comp["success"], comp
        after = [b for b in h["blocks"] if b["time"] > comp["time"] and b["committed"]]
        assert after and max(after[0]["qber"].values()) < threshold, after[:1]
        outage = _events(net, "classical_outage", "start")[0]["time"]
        for name in ("alice", "bob"):
            states = _history(net, name)["states"]
            down = _first(states, "DOWN", outage)
            assert down is not None and down < restored + 5, states  # the lost channel was noticed
            assert _first(states, "UP", restored) is not None
    finally:
        net.stop_all()


def _history_live(net: NetworkProcesses, name: str) -> list[dict]:
    """The node's events so far, from its endpoint (the run file is still being written)."""
    st = net.status(name)
    if not st or not st.get("http"):
        return []
    try:
        return json.loads(urllib.request.urlopen(f"{st['http']['url']}/events?since=0", timeout=5).read())
    except OSError:
        return []


def test_eavesdropper_raises_an_alarm_that_only_an_operator_clears(tmp_path: Path) -> None:
    net = _start(tmp_path, "events:\n  - {at_s: 2, eavesdropper: {duration_s: 12}}\n")
    try:
        net.start_scenario()
        net.wait_for(lambda: net.state("alice") == "ALARM" and net.state("bob") == "ALARM", 40, "ALARM on both")
        eve_start = _events(net, "eavesdropper", "start")[0]["time"]
        net.wait_for(lambda: bool(_events(net, "eavesdropper", "end")), 20, "Eve leaving")
        eve_end = _events(net, "eavesdropper", "end")[0]["time"]
        held = {n: [b["block"] for b in net.status(n)["store"]] for n in ("alice", "bob")}
        time.sleep(2 * FAST["key_management"]["block_duration_s"] + 1)  # two blocks' time after Eve left
        for n in ("alice", "bob"):
            st = net.status(n)
            assert st["state"] == "ALARM", st["link"]  # never clears by itself
            assert [b["block"] for b in st["store"]] == held[n]  # and no key committed meanwhile
        mirrored = clear_alarm(net.desc, "bob")
        assert not mirrored["cleared"] and "alice" in mirrored["message"]  # the coordinating node holds it
        assert clear_alarm(net.desc, "alice", operator="test")["cleared"]
        net.wait_for(lambda: net.state("alice") == "UP" and net.state("bob") == "UP", 30, "UP after the operator")
        _stop_and_compare(net)
        h = _history(net, "alice")
        (alarm,) = h["alarms"]
        assert eve_start < alarm["time"] < eve_end
        committed = [b for b in h["blocks"] if b["committed"]]
        # no block committed between the alarm and the operator's command
        cleared = h["alarms_cleared"][0]["time"]
        assert not [b for b in committed if alarm["time"] < b["time"] < cleared]
    finally:
        net.stop_all()

