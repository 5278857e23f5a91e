"""The simulated lab against the analytic formulas of physics.md, with 4σ tolerances."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qlab.procedures.chsh import ChshProcedure
from qlab.procedures.delays import DelaysProcedure
from qlab.procedures.engine import RunEngine
from qlab.procedures.visibility import set_analyzers
from qlab.stream.coincidence import count
from tests.simlab_helpers import ideal_fibres, no_afterpulses, set_visibility

T_S = 2.0
WIDE_WINDOW_PS = 10_000  # ±5 ns: > 10σ of the 0.5 ns combined jitter, so no true pair is cut off


def _roles(lab) -> dict[str, int]:
    return {role: ch for role, (_, ch) in lab.roles().items()}


def _calibrated(lab):
    lab["pump"].set_output(True)  # on before the run, so the run restores it on for the measurements after
    RunEngine(lab).run(DelaysProcedure(), record=False)
    return lab


def _modify(*fns):
    def m(cfg):
        for f in fns:
            f(cfg)
    return m


def test_singles_and_coincidences_match_formulas(make_lab) -> None:
    lab = _calibrated(make_lab(_modify(ideal_fibres, no_afterpulses), seed=5))
    set_analyzers(lab, 0.0, 22.5)
    chunk = lab["tagger"].acquire(T_S)
    exp = lab.sim.expected_rates()
    roles = _roles(lab)
    names = {d.channel.role: n for n, d in lab.config.instruments.items() if d.channel}
    res = count(chunk, sorted(roles.values()), WIDE_WINDOW_PS, accidentals_offset_ps=200_000)
    t = res.exposure_s
    assert t == pytest.approx(T_S, rel=0.03)
    for role, ch in roles.items():
        name = names[role]
        r = exp["singles_hz"][name]
        tau = lab.sim.detectors[name].dead_time_ns * 1e-9
        expected = r / (1 + r * tau) * t  # R_i = eta_i N p_i + d_i, then non-paralyzable dead time
        assert abs(res.single(ch) - expected) < 4 * math.sqrt(expected), (role, res.single(ch), expected)
    ch_of = {name: roles[role] for role, name in names.items()}
    for (a, b), rc in exp["coincidences_hz"].items():
        ra, rb = res.single(ch_of[a]) / t, res.single(ch_of[b]) / t
        expected = (rc + ra * rb * WIDE_WINDOW_PS * 1e-12) * t  # eta_a eta_b N p_ab, plus accidentals
        got = res.pair(ch_of[a], ch_of[b])
        assert abs(got - expected) < 4 * math.sqrt(expected) + 1, (a, b, got, expected)


def test_accidentals_offpeak_match_r1_r2_dt(make_lab) -> None:
    lab = _calibrated(make_lab(_modify(ideal_fibres, no_afterpulses), seed=6))
    chunk = lab["tagger"].acquire(T_S)
    roles = _roles(lab)
    res = count(chunk, sorted(roles.values()), WIDE_WINDOW_PS, accidentals_offset_ps=100_000)
    t = res.exposure_s
    measured = expected = 0.0
    for a in (r for r in roles if r.startswith("alice")):
        for b in (r for r in roles if r.startswith("bob")):
            measured += res.accidental_pair(roles[a], roles[b])
            expected += res.rate(roles[a]) * res.rate(roles[b]) * WIDE_WINDOW_PS * 1e-12 * t
    assert expected > 300
    assert abs(measured - expected) < 4 * math.sqrt(expected), (measured, expected)


def test_dead_time(make_lab) -> None:
    def long_dead_time(cfg):
        ideal_fibres(cfg)
        no_afterpulses(cfg)
        cfg["instruments"]["alice_H"]["sim"]["dead_time_ns"] = 1000.0
    lab = make_lab(long_dead_time, seed=7)
    lab["pump"].set_output(True)
    chunk = lab["tagger"].acquire(T_S)
    ch = _roles(lab)["alice.H"]
    t_ch = chunk.timestamps[chunk.channels == ch]
    jitter = math.hypot(350.0, 9.0)
    assert np.diff(t_ch).min() >= 1_000_000 - 8 * jitter * math.sqrt(2)
    r = lab.sim.expected_rates()["singles_hz"]["alice_H"]
    expected = r / (1 + r * 1e-6) * chunk.exposure_s
    assert abs(t_ch.size - expected) < 4 * math.sqrt(expected)
    assert t_ch.size < 0.97 * r * chunk.exposure_s  # the saturation is really there


@pytest.mark.parametrize("v", [0.7, 0.9, 0.98])
def test_chsh_matches_werner_visibility(make_lab, v: float) -> None:
    lab = _calibrated(make_lab(set_visibility(v), seed=int(v * 100)))
    r = RunEngine(lab).run(ChshProcedure(integration_s=1.0, measure_visibility=False), record=False)
    assert abs(r["S"] - 2 * math.sqrt(2) * v) < 4 * r["S_err"], r


def test_pump_off_gives_no_coincidences_above_accidentals(make_lab) -> None:
    lab = _calibrated(make_lab(ideal_fibres, seed=8))
    lab.lasers_off()
    chunk = lab["tagger"].acquire(T_S)
    roles = _roles(lab)
    res = count(chunk, sorted(roles.values()), 2000, accidentals_offset_ps=50_000)
    true = sum(res.pair(roles[a], roles[b]) for a in roles for b in roles if a < b)
    acc = sum(res.accidental_pair(roles[a], roles[b]) for a in roles for b in roles if a < b)
    assert res.singles.sum() > 0  # dark counts still arrive
    assert true - acc < 4 * math.sqrt(acc + 1) + 2


def test_fibre_unitary_lowers_visibility_and_controller_moves_change_coincidences(make_lab) -> None:
    def twisted(cfg):
        cfg["simulation"]["fibres"]["bob"]["unitary"] = [30.0, 70.0, 10.0]
        cfg["simulation"]["fibres"]["alice"]["unitary"] = "identity"
    lab = _calibrated(make_lab(twisted, seed=9))
    roles = _roles(lab)

    def hv_visibility() -> float:
        res = count(lab["tagger"].acquire(0.5), sorted(roles.values()), 2000)
        par = res.pair(roles["alice.H"], roles["bob.H"]) + res.pair(roles["alice.V"], roles["bob.V"])
        cross = res.pair(roles["alice.H"], roles["bob.V"]) + res.pair(roles["alice.V"], roles["bob.H"])
        return (par - cross) / (par + cross)

    assert hv_visibility() < 0.85
    lab = _calibrated(make_lab(set_visibility(0.98), seed=9))
    roles = _roles(lab)
    assert hv_visibility() > 0.95

    def hh() -> int:
        return count(lab["tagger"].acquire(0.5), sorted(roles.values()), 2000).pair(roles["alice.H"], roles["bob.H"])

    # Turning Bob's analyzer by 45° (HWP 22.5°) must change what the tagger reports.
    before = hh()
    lab["bob_analyzer"].move_absolute(22.5, "hwp")
    assert hh() < 0.6 * before


def test_generation_is_deterministic_for_a_seed(make_lab) -> None:
    a = make_lab(seed=42)
    b = make_lab(seed=42)
    for lab in (a, b):
        lab["pump"].set_output(True)
    ca, cb = a["tagger"].acquire(0.2), b["tagger"].acquire(0.2)
    assert len(ca) > 1000
    assert np.array_equal(ca.timestamps, cb.timestamps) and np.array_equal(ca.channels, cb.channels)
    assert np.all(np.diff(ca.timestamps) >= 0)


def test_dead_time_holds_across_parallel_seams(make_lab, monkeypatch) -> None:
    """Batches are generated as two halves on two cores; at every seam the dead time still holds exactly
    (no jitter here, so tag spacing is true-time spacing) and the saturated rate stays unbiased."""
    from qlab.sim.streaming import TagGenerator

    def saturating(cfg):
        ideal_fibres(cfg)
        no_afterpulses(cfg)
        cfg["instruments"]["tagger"]["sim"] = {"jitter_ps": 0.0}
        for inst in cfg["instruments"].values():
            if inst["driver"] == "excelitas.spcm":
                inst["sim"].update(dead_time_ns=2000.0, jitter_ps=0.0)

    seams = []
    original = TagGenerator._run_kernel

    def spy(self, state, t_from, *a):
        if t_from > 0 and state is self._state_b:
            seams.append(t_from)
        return original(self, state, t_from, *a)

    monkeypatch.setattr(TagGenerator, "_run_kernel", spy)
    lab = make_lab(saturating, seed=17)
    lab["pump"].set_current(0.2)
    lab["pump"].set_output(True)
    chunk = lab["tagger"].acquire(T_S)
    assert len(seams) > 15  # the parallel path really ran, many times
    rates = lab.sim.expected_rates()["singles_hz"]
    n_obs, n_exp = 0, 0.0
    for det in lab.sim.detectors.values():
        t_ch = chunk.timestamps[chunk.channels == det.input]
        assert np.diff(t_ch).min() >= 2_000_000  # ps: strictly one dead time, seams included
        r = rates[det.name]
        n_obs += t_ch.size
        n_exp += r / (1 + r * 2e-6) * chunk.exposure_s
    assert abs(n_obs - n_exp) < 4 * math.sqrt(n_exp)
