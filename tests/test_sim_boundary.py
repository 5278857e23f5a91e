"""The simulation behind its narrow interface: Lab.clock, the simulation truth recorded by the engine,
BB84's transmitter as a simulation-only service, and no simulation state read outside qlab/sim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from qlab.errors import QlabError
from qlab.instruments.clock import WallClock
from qlab.procedures.chsh import ChshProcedure
from qlab.procedures.engine import RunEngine
from qlab.procedures.qkd import QkdProcedure
from qlab.storage.reader import RunReader

REPO = Path(__file__).resolve().parent.parent
SIM_FREE = ["qlab/procedures", "qlab/analysis", "qlab/qkd", "qlab/stream", "qlab/storage", "gui"]


def _hardware_lab(tmp_path: Path):
    """The default lab with every instrument on a (never opened) hardware backend."""
    from qlab.config import load_config
    from qlab.lab import Lab

    cfg = yaml.safe_load((REPO / "instruments.yaml").read_text())
    for inst in cfg["instruments"].values():
        inst["backend"] = "passive" if inst["driver"] == "excelitas.spcm" else "/dev/ttyQLAB0"
    path = tmp_path / "hardware.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Lab(load_config(path), data_dir=tmp_path / "data")


def test_no_simulation_state_is_read_outside_the_simulation() -> None:
    pattern = re.compile(r"\.sim\b(?!\w)|import qlab\.sim|from qlab\.sim")
    offenders = [f"{p.relative_to(REPO)}:{i}" for d in SIM_FREE for p in sorted((REPO / d).rglob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_lab_clock_is_the_simulations_or_the_wall_clock(make_lab, tmp_path: Path) -> None:
    lab = make_lab(seed=1)
    assert lab.clock is lab.sim.clock
    t0 = lab.clock.now()
    lab.clock.sleep(0.25)
    assert lab.clock.now() - t0 == pytest.approx(0.25, abs=0.05)
    hw = _hardware_lab(tmp_path)
    assert isinstance(hw.clock, WallClock) and hw.sim is None and not hw.simulated
    assert hw.simulation_report() == {}


def test_bb84_refuses_on_hardware_with_a_clear_error(tmp_path: Path) -> None:
    hw = _hardware_lab(tmp_path)
    with pytest.raises(QlabError, match="only in the simulated lab"):
        RunEngine(hw).run(QkdProcedure(protocol="bb84", integration_s=0.2, store_keys=False), record=False)
    with pytest.raises(QlabError, match="only in the simulated lab"):
        hw.simulation_service("bb84_transmitter")


def test_unknown_simulation_service_is_named(make_lab) -> None:
    with pytest.raises(QlabError, match="no service 'eve'.*bb84_transmitter"):
        make_lab(seed=2).simulation_service("eve")


def test_simulation_truth_is_recorded_while_the_light_was_on(make_lab) -> None:
    lab = make_lab(seed=3)
    r = RunEngine(lab).run(ChshProcedure(integration_s=0.05, measure_visibility=False), record=True)
    assert not lab["pump"].output()  # chsh put the light back off ...
    truth = r["simulation_truth"]
    assert truth["pair_rate_hz"] > 0  # ... but the truth is the channel as it was while measuring
    assert truth["channel_transmission"]["bob"] == pytest.approx(
        lab.sim.fibre_transmission["bob"] * sum(d.efficiency for d in lab.sim.detectors.values()
                                                if d.party == "bob") / 4)
    assert 0 < truth["bbm92_plob_bound_bps"] < truth["pair_rate_hz"]
    with RunReader(r["run_file"]) as rd:
        names = [x["name"] for x in rd.results()]
        stored = {x["name"]: x["data"] for x in rd.results()}
    assert names[-1] == "chsh" and "simulation_truth" in names
    assert stored["simulation_truth"]["bbm92_plob_bound_bps"] == pytest.approx(truth["bbm92_plob_bound_bps"])
    assert "plob_bound_bps" not in stored["chsh"]


def test_bb84_result_has_no_simulation_figures_and_truth_has_the_transmitters_bound(make_lab) -> None:
    lab = make_lab(seed=4)
    r = RunEngine(lab).run(QkdProcedure(protocol="bb84", integration_s=2.0, store_keys=False), record=False)
    assert not any("plob" in k for k in r if k != "simulation_truth")
    tx = r["simulation_truth"]["bb84_transmitter"]
    assert tx["rep_rate_hz"] == 10e6 and tx["pulses"] == 20_000_000
    assert tx["plob_bound_bps"] == pytest.approx(tx["plob_bits_per_pulse"] * 10e6)
    assert 0 < r["secret_key_rate_bps"] < tx["plob_bound_bps"]
