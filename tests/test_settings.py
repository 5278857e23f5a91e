"""The settings tables: snapshots, apply_settings, the settings cache and `qlab config check`, all driven from
one declaration per setting (qlab/settings_spec.py, bound in qlab/instruments/*)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qlab.config import load_config
from qlab.errors import ConfigError, InstrumentError, LimitError
from qlab.instruments.limits import UNITS
from qlab.procedures.delays import DelaysProcedure
from qlab.procedures.engine import RunEngine
from qlab.settings_spec import KIND_SETTINGS, parse_settings
from tests.conftest import DEFAULT_CONFIG
from tests.test_cli import qlab


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _check_error(tmp_path: Path, text: str) -> ConfigError:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    return info.value


# -- qlab config check -------------------------------------------------------------------------------------

def test_config_check_rejects_setting_outside_its_limit(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace("settings: {temperature_c: 25.0, current_a: 0.12}",
                                              "settings: {temperature_c: 25.0, current_a: 0.5}")
    err = _check_error(tmp_path, text)
    assert f"bad.yaml:{_line_of(text, 'current_a: 0.5')}: instruments.pump.settings.current_a:" in str(err)
    assert "outside limits.current_a [0.0, 0.2] A" in str(err)


def test_config_check_rejects_wrong_type_and_unknown_setting(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace("settings: {temperature_c: 25.0, current_a: 0.12}",
                                              "settings:\n      temperature_c: warm\n      current_ma: 120")
    text = text.replace("trigger_levels_v: {1: 0.5, 2: 0.5,", "trigger_levels_v: {1: 0.5, 2: high,")
    err = _check_error(tmp_path, text)
    problems = {key: (line, msg) for line, key, msg in err.problems}
    assert problems["instruments.pump.settings.temperature_c"] == (
        _line_of(text, "temperature_c: warm"), "expected a number (float), got 'warm'")
    assert problems["instruments.pump.settings.current_ma"][0] == _line_of(text, "current_ma: 120")
    assert "unknown setting for a laser" in problems["instruments.pump.settings.current_ma"][1]
    assert problems["instruments.tagger.settings.trigger_levels_v[2]"][0] == _line_of(text, "2: high")


def test_config_check_knows_axes_and_per_input_limits(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace(
        "    axes: {hwp: {address: 0, plate: half}}\n    optics: {party: bob, stage: analyzer}\n",
        "    axes: {hwp: {address: 0, plate: half}}\n    optics: {party: bob, stage: analyzer}\n"
        "    settings: {position_deg: {qwp: 10}}\n")
    text = text.replace("trigger_levels_v: {1: 0.5,", "delays_ps: {3: 2000000}\n      trigger_levels_v: {1: 0.5,")
    err = _check_error(tmp_path, text)
    keys = {key: msg for _, key, msg in err.problems}
    assert "unknown axis 'qwp'" in keys["instruments.bob_analyzer.settings.position_deg.qwp"]
    assert "outside limits.delay_ps" in keys["instruments.tagger.settings.delays_ps[3]"]


def test_cli_config_check_names_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text().replace("current_a: 0.12}", "current_a: 0.5}"))
    out = qlab("config", "check", str(bad), data_dir=tmp_path, check=False)
    assert out.returncode == 2
    line = _line_of(bad.read_text(), "current_a: 0.5")
    assert f"bad.yaml:{line}: instruments.pump.settings.current_a: 0.5 A is outside limits.current_a" in out.stderr


# -- one table drives units, snapshots and apply_settings --------------------------------------------------

def test_limit_units_come_from_the_tables() -> None:
    assert UNITS["current_a"] == "A" and UNITS["delay_ps"] == "ps" and UNITS["position_deg"] == "deg"
    assert set(UNITS) == {s.limit for specs in KIND_SETTINGS.values() for s in specs if s.limit}


def test_snapshot_entries_are_the_table(make_lab) -> None:
    lab = make_lab(seed=3)
    snap = lab.snapshot()
    for name, h in lab.handles.items():
        inst = h.instrument
        expected: dict[str, str] = {}  # entry -> unit, from the table alone
        for s in inst.settings_table():
            if not s.spec.readable:
                continue
            if s.spec.index == "map":
                prefix = s.spec.snapshot.split("{")[0]
                expected |= {e: s.spec.unit for e in snap[name] if e.startswith(prefix)}
                continue
            expected |= {s.spec.entry(i): s.spec.unit for i in inst.setting_indices(s)}
        assert expected and set(expected) <= set(snap[name]), name
        assert {e: snap[name][e]["unit"] for e in expected} == expected
    assert "protection_interlock" in snap["pump"] and snap["pump"]["current_set"]["unit"] == "A"


def test_apply_settings_snapshot_round_trip(make_lab) -> None:
    lab = make_lab(seed=4)
    wanted = {
        "pump": {"current_a": 0.15, "temperature_c": 26.5},
        "tagger": {"delays_ps": {1: 500, 3: 7000}, "trigger_levels_v": {2: 0.3}},
        "bob_analyzer": {"position_deg": {"hwp": 30.0}},
        "alice_compensator": {"position_deg.qwp1": 12.0},
    }
    for name, settings in wanted.items():
        lab[name].apply_settings(settings)
    snap = lab.snapshot()
    for name, settings in wanted.items():
        kind = lab[name].kind
        axes = lab[name].axes() if kind == "polarization" else None
        values, problems = parse_settings(kind, settings, axes)
        assert not problems and values
        for sv in values:
            got = snap[name][sv.spec.entry(sv.index)]
            assert got["unit"] == sv.spec.unit
            assert got["value"] == pytest.approx(sv.value, abs=0.05), (name, sv)
    assert snap["tagger"]["delay_ch1"]["value"] == 500 and snap["tagger"]["delay_ch3"]["value"] == 7000
    # Snapshot back into settings: applying what the snapshot says changes nothing.
    lab["pump"].apply_settings({"current_a": snap["pump"]["current_set"]["value"]})
    assert lab.snapshot()["pump"]["current_set"] == snap["pump"]["current_set"]


def test_apply_settings_refuses_bad_values_before_sending(make_lab) -> None:
    lab = make_lab(seed=5)
    before = lab["pump"].current_setpoint()
    with pytest.raises(InstrumentError, match="expected a number"):
        lab["pump"].apply_settings({"current_a": "lots"})
    with pytest.raises(InstrumentError, match="unknown setting for a laser"):
        lab["pump"].apply_settings({"current_ma": 120})
    with pytest.raises(LimitError):
        lab["pump"].apply_settings({"current_a": 0.5})
    with pytest.raises(InstrumentError, match="no input 99"):
        lab["tagger"].apply_settings({"delays_ps": {99: 0}})
    assert lab["pump"].current_setpoint() == before


# -- the settings cache ------------------------------------------------------------------------------------

def test_cache_listener_hears_sets_and_polls(make_lab) -> None:
    lab = make_lab(seed=6)
    pump = lab["pump"]
    heard: list[tuple[str, dict]] = []
    pump.cache.add_listener(lambda name, changes: heard.append((name, changes)))
    pump.set_current(0.15)
    assert heard[-1][0] == "pump"
    assert heard[-1][1]["current_set"].value == 0.15 and heard[-1][1]["current_set"].source == "set"
    assert pump.cache.get("current_set").unit == "A"
    # A change behind the cache's back (the driver's raw setter) is seen at the next poll.
    pump.call(lambda inst: inst._set_current(0.13))
    n = len(heard)
    pump.read_settings()
    assert len(heard) == n + 1
    assert heard[-1][1]["current_set"].value == pytest.approx(0.13) and heard[-1][1]["current_set"].source == "read"
    # An unchanged read refreshes the timestamp but tells no one.
    t_before = pump.cache.get("current_set").time_s
    pump.read_settings(["current"])
    assert len(heard) == n + 1 and pump.cache.get("current_set").time_s >= t_before


def test_a_failing_listener_does_not_fail_the_set(make_lab) -> None:
    lab = make_lab(seed=7)

    def broken(name, changes):
        raise RuntimeError("view gone")

    lab["pump"].cache.add_listener(broken)
    lab["pump"].set_current(0.11)
    assert lab["pump"].current_setpoint() == pytest.approx(0.11)


def test_delays_procedure_shows_in_snapshot_and_cache(make_lab) -> None:
    lab = make_lab(seed=8)
    result = RunEngine(lab).run(DelaysProcedure(integration_s=0.5), record=False)
    applied = {int(k): v for k, v in result["applied_input_delays_ps"].items()}
    assert max(applied.values()) > 10_000  # the default lab's cables differ by up to 18.9 ns
    snap = lab.snapshot()
    cache = lab["tagger"].cache
    for ch, d in applied.items():
        assert snap["tagger"][f"delay_ch{ch}"] == {"value": d, "unit": "ps"}
        assert cache.get(f"delay_ch{ch}").value == d
