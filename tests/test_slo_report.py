"""Issue 17: the SLO report's numbers against a hand-computed timeline on synthetic run files (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qlab.network.report import build_report, format_report, plot_report
from qlab.storage.runfile import RunFile

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000.0  # wall time of the scenario start


def _write_run(path: Path, node: str, role: str, records: list[tuple[str, dict]]) -> Path:
    rf = RunFile(path, taggers=[f"{node}_tagger"], procedure="network-link",
                 config_text=(ROOT / "network.yaml").read_text(), parameters={"node": node})
    for name, data in records:
        rf.add_result(name, data)
    rf.finish()
    return path


def _block(t: float, n: int, bits: int, qz: float | None, qx: float | None, committed: bool = True) -> tuple[str, dict]:
    return ("block", {"time": T0 + t, "block": n, "committed": committed, "duration_s": 10.0,
                      "secret_bits": bits if committed else 0, "qber": {"Z": qz, "X": qx},
                      "sifted": {"Z": 1000, "X": 1000}})


def _state(t: float, frm: str, to: str) -> tuple[str, dict]:
    return ("state", {"time": T0 + t, "from": frm, "to": to, "reason": f"{frm}->{to}"})


@pytest.fixture
def synthetic(tmp_path: Path) -> dict:
    """A 100 s window: a 10 s fibre cut at t=20 (Bob DOWN 21..32, Alice DOWN 25..33), a QBER excursion at
    t=60..70 (Alice DEGRADED 60..70), an alarm on Alice at t=90 (never cleared). Blocks of 10 s."""
    alice = [("link_start", {"time": T0 - 20, "state": "STARTING", "node": "alice", "role": "alice",
                             "block_duration_s": 10.0}),
             _state(-15, "STARTING", "SYNCING"), _state(-5, "SYNCING", "UP"),
             _block(-5, 1, 999, 0.01, 0.01),
             _block(10, 2, 3000, 0.01, 0.01), _block(20, 3, 2000, 0.01, 0.01),
             _state(25, "UP", "DOWN"), _block(25, 4, 0, None, None, committed=False),
             _state(33, "DOWN", "UP"), _block(33, 5, 1000, 0.01, 0.01),
             _block(43, 6, 3000, 0.01, 0.01), _block(53, 7, 3000, 0.02, 0.01),
             _state(60, "UP", "DEGRADED"), _block(63, 8, 1500, 0.06, 0.03), _block(70, 9, 1500, 0.02, 0.07),
             _state(70, "DEGRADED", "UP"), _block(80, 10, 3000, 0.01, 0.01),
             ("alarm", {"time": T0 + 90, "reason": "QBER Z 0.25 X 0.25 in both bases"}),
             _state(90, "UP", "ALARM"), ("reconcile", {"time": T0 + 91, "paired": [], "dropped": [10]}),
             ("link_end", {"time": T0 + 100, "state": "ALARM"})]
    bob = [("link_start", {"time": T0 - 20, "state": "STARTING", "node": "bob", "role": "bob",
                           "block_duration_s": 10.0}),
           _state(-15, "STARTING", "SYNCING"), _state(-5, "SYNCING", "UP"),
           _state(21, "UP", "DOWN"), _state(31, "DOWN", "RECOVERING"), _state(32, "RECOVERING", "UP"),
           _state(90, "UP", "ALARM"), ("link_end", {"time": T0 + 105, "state": "ALARM"})]
    events = [{"time": T0, "t_s": 0, "event": "scenario", "phase": "start"},
              {"time": T0 + 20, "t_s": 20, "index": 0, "event": "fibre_cut", "phase": "start", "duration_s": 10},
              {"time": T0 + 30, "t_s": 30, "index": 0, "event": "fibre_cut", "phase": "end"}]
    log = tmp_path / "events.jsonl"
    log.write_text("\n".join(json.dumps(e) for e in events))
    files = [_write_run(tmp_path / "alice-link.h5", "alice", "alice", alice),
             _write_run(tmp_path / "bob-link.h5", "bob", "bob", bob)]
    return {"files": files, "events": log}


def test_report_numbers_match_the_hand_computed_timeline(synthetic: dict, tmp_path: Path) -> None:
    r = build_report(synthetic["files"], events=synthetic["events"])
    assert r["window"]["start"] == pytest.approx(T0)
    assert r["window"]["duration_s"] == pytest.approx(100.0)  # ends with the first node's end (Alice, t=100)
    # Link state (worst of the two): UP 0..21, DOWN 21..33 (Bob 21..31, Alice 25..33), UP 33..60, DEGRADED
    # 60..70, UP 70..90, ALARM 90..100.
    t = r["time_in_state_s"]
    assert t["DOWN"] == pytest.approx(12.0)
    assert t["DEGRADED"] == pytest.approx(10.0)
    assert t["ALARM"] == pytest.approx(10.0)
    assert t["UP"] == pytest.approx(21 + 27 + 20)
    assert r["availability"] == pytest.approx(0.78)
    (o,) = r["outages"]
    assert o["duration_s"] == pytest.approx(12.0)
    assert o["cause"]["event"] == "fibre_cut"
    assert o["time_to_detect_s"] == pytest.approx(1.0)  # cut at 20, DOWN at 21
    assert o["time_to_recover_s"] == pytest.approx(3.0)  # fibre back at 30, UP at 33
    assert r["mttr_s"] == pytest.approx(3.0)
    # Key: blocks in the window 2..10 committed except 4: 3000+2000+1000+3000+3000+1500+1500+3000 = 18000
    assert r["committed_bits_in_window"] == 18000
    assert r["net_key_rate_bps"]["mean"] == pytest.approx(180.0)
    # usable key: every committed block of the run (block 1 too) minus block 10 dropped at reconciliation
    assert r["usable_key_bits"] == 999 + 18000 - 3000
    assert r["blocks"] == {"committed": 8, "aborted": 1}
    assert r["key_lost_to_aborted_blocks_bits"] == pytest.approx(18000 / 8)
    # per-second samples t = 1..100: bits committed in (t-10, t] / 10 s. Committed blocks at -5 (before the
    # window, still counted here), 10, 20, 33, 43, 53, 63, 70, 80, so the samples are 0 at t = 5..9, 30..32 (block 4
    # at 25 aborted) and 90..100: 19 of 100, and the 5th percentile is 0; t = 70 sees blocks 63 and 70.
    ks = r["series"]["key_rate_per_s"]
    assert len(ks) == 100
    assert [t for t, x in enumerate(ks, start=1) if x == 0] == [*range(5, 10), 30, 31, 32, *range(90, 101)]
    assert ks[70 - 1] == pytest.approx((1500 + 1500) / 10)
    assert ks[4 - 1] == pytest.approx(999 / 10)
    assert r["net_key_rate_bps"]["p5"] == 0.0
    (ex,) = r["qber_excursions"]  # blocks 8 and 9 (above qber_degraded 0.045)
    assert ex["blocks"] == [8, 9]
    assert ex["peak"] == {"Z": pytest.approx(0.06), "X": pytest.approx(0.07)}
    (alarm,) = r["alarms"]
    assert alarm["t_s"] == pytest.approx(90.0) and alarm["cleared_at"] is None
    slo = r["slo"]  # network.yaml: min_key_rate_bps 100, max_outage_s 30, min_availability 0.9
    assert slo["min_key_rate_bps"]["met"] and slo["max_outage_s"]["met"]
    assert not slo["min_availability"]["met"] and not r["slo_met"]
    text = format_report(r)
    assert "availability 78.0 %" in text and "MISSED" in text
    png = plot_report(r, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_a_scenario_starts_when_the_link_is_first_up(synthetic: dict) -> None:
    r = build_report(synthetic["files"])
    assert r["window"]["start"] == pytest.approx(T0 - 5)  # both nodes UP at t=-5
    (o,) = r["outages"]
    assert o["cause"] is None and o["time_to_detect_s"] is None
    assert o["time_to_recover_s"] == pytest.approx(12.0)  # unknown cause: from the outage's start to UP


def test_report_cli_json_and_errors(synthetic: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from qlab.cli import main

    assert main(["network", "report", *map(str, synthetic["files"]), "--events", str(synthetic["events"]),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["availability"] == pytest.approx(0.78)
    other = RunFile(tmp_path / "other.h5", taggers=["t"], procedure="chsh")
    other.finish()
    assert main(["network", "report", str(tmp_path / "other.h5")]) != 0
    assert "not a network node's run file" in capsys.readouterr().err
