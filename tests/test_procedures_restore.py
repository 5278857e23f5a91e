"""Procedures put back what they move (analyzer and compensator angles, laser state), also on abort, unless
setting it is their purpose: `delays` keeps the tagger delays and `polarization` the compensator angles."""

from __future__ import annotations

import pytest

from qlab.errors import AbortedError
from qlab.procedures.chsh import ChshProcedure
from qlab.procedures.delays import DelaysProcedure
from qlab.procedures.engine import RunEngine
from qlab.procedures.polarization import PolarizationProcedure
from qlab.procedures.tomography import TomographyProcedure

OPTICS = ("alice_analyzer", "bob_analyzer", "alice_compensator", "bob_compensator")


def _angles(lab) -> dict[str, dict[str, float]]:
    return {name: lab[name].positions() for name in OPTICS}


def _move_somewhere(lab) -> dict[str, dict[str, float]]:
    """Non-default angles, so 'restored' cannot pass by accident of everything being at 0°."""
    for i, name in enumerate(OPTICS):
        for j, axis in enumerate(lab[name].axes()):
            lab[name].move_absolute(7.0 + 11.0 * i + 3.0 * j, axis)
    return _angles(lab)


def _assert_same_angles(before: dict, after: dict) -> None:
    for name, axes in before.items():
        for axis, deg in axes.items():
            assert after[name][axis] == pytest.approx(deg, abs=0.05), (name, axis, after[name][axis], deg)


@pytest.mark.parametrize("laser_on", [False, True])
def test_chsh_leaves_angles_and_laser_as_it_found_them(make_lab, laser_on: bool) -> None:
    lab = make_lab(seed=5)
    before = _move_somewhere(lab)
    lab["pump"].set_output(laser_on)
    r = RunEngine(lab).run(ChshProcedure(integration_s=0.05, measure_visibility=False), record=False)
    assert r["coincidences"] and sum(r["coincidences"]) > 0  # it did measure with the light on
    _assert_same_angles(before, _angles(lab))
    assert lab["pump"].output() is laser_on


def test_tomography_leaves_compensators_analyzers_and_laser_as_it_found_them(make_lab) -> None:
    lab = make_lab(seed=6)
    before = _move_somewhere(lab)
    RunEngine(lab).run(TomographyProcedure(integration_s=0.02, measurements=16, resamples=0), record=False)
    _assert_same_angles(before, _angles(lab))
    assert not lab["pump"].output()


def test_an_aborted_chsh_still_restores_the_angles_and_leaves_the_light_off(make_lab) -> None:
    lab = make_lab(seed=7)
    before = _move_somewhere(lab)
    lab["pump"].set_output(True)
    calls = []

    def progress(fraction: float, message: str) -> None:
        calls.append(message)
        if len(calls) == 2:  # after the first CHSH setting has moved the analyzers
            engine.abort()

    engine = RunEngine(lab, progress)
    with pytest.raises(AbortedError):
        engine.run(ChshProcedure(integration_s=0.05, measure_visibility=False), record=False)
    _assert_same_angles(before, _angles(lab))
    assert not lab["pump"].output()  # safety wins over restoring: an abort leaves the lasers off


def test_delays_keeps_its_calibration_and_restores_the_laser(make_lab) -> None:
    lab = make_lab(seed=8)
    r = RunEngine(lab).run(DelaysProcedure(integration_s=0.5), record=False)
    applied = {int(ch): d for ch, d in r["applied_input_delays_ps"].items()}
    assert any(applied.values())
    assert {ch: lab["tagger"].delay(ch) for ch in applied} == applied
    assert lab.calibrations.latest("delays") is not None
    assert not lab["pump"].output()


def test_polarization_keeps_the_compensator_and_restores_analyzers_and_laser(make_lab) -> None:
    lab = make_lab(seed=9)
    before = _move_somewhere(lab)
    r = RunEngine(lab).run(PolarizationProcedure(integration_s=0.05, sweeps=1), record=False)
    inst = r["controller"]
    after = _angles(lab)
    assert after[inst] == pytest.approx(r["positions_deg"], abs=0.05)  # the calibration stays applied
    assert after[inst] != pytest.approx(before[inst], abs=0.05)
    assert lab.calibrations.latest("polarization")["values"][inst] == pytest.approx(r["positions_deg"])
    _assert_same_angles({n: before[n] for n in ("alice_analyzer", "bob_analyzer")}, after)
    assert not lab["pump"].output()
