"""instruments.yaml validation: every error names the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from qlab.config import load_config
from qlab.errors import ConfigError
from tests.conftest import DEFAULT_CONFIG


def test_repo_config_is_valid() -> None:
    loaded = load_config(DEFAULT_CONFIG)
    assert loaded.kind("pump") == "laser"
    assert len(loaded.names_of_kind("detector")) == 8
    roles = {i.channel.role for i in loaded.config.instruments.values() if i.channel}
    assert roles == {f"{p}.{k}" for p in ("alice", "bob") for k in "HVDA"}


def _error_for(tmp_path: Path, text: str) -> ConfigError:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    return info.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_wrong_type_names_line_and_key(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace("timeout_s", "x").replace(
        "      current_a: {min: 0.0, max: 0.2}", "      current_a: {min: 0.0, max: lots}")
    err = _error_for(tmp_path, text)
    msg = str(err)
    assert "instruments.pump.limits.current_a.max" in msg
    assert f"bad.yaml:{_line_of(text, 'max: lots')}" in msg
    assert "lots" in msg


def test_unknown_driver_names_line_and_key(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace("driver: thorlabs.itc4001", "driver: acme.laser9000")
    err = _error_for(tmp_path, text)
    assert "instruments.pump.driver" in str(err)
    assert f":{_line_of(text, 'acme.laser9000')}:" in str(err)
    assert "unknown driver 'acme.laser9000'" in str(err)


def test_missing_key_names_line_and_key(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace(
        "  bob_analyzer:\n    driver: thorlabs.ell14\n", "  bob_analyzer:\n")
    err = _error_for(tmp_path, text)
    assert "instruments.bob_analyzer.driver: required key is missing" in str(err)
    assert f":{_line_of(text, 'bob_analyzer:')}:" in str(err)


def test_bad_yaml_line(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace("  name: qlab simulated entangled-photon lab",
                                              "  name: [unclosed")
    err = _error_for(tmp_path, text)
    assert "YAML syntax error" in str(err)
    assert err.problems[0][0] is not None and err.problems[0][0] >= _line_of(text, "[unclosed")


def test_unknown_key_and_bad_wiring(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace("channel: {tagger: tagger, input: 2, role: alice.V}",
                                              "channel: {tagger: tagger, input: 1, role: alice.V}")
    text = text.replace("channel: {tagger: tagger, input: 3, role: alice.D}",
                        "channel: {tagger: taggr, input: 3, role: alice.D}")
    text = text.replace("    optics: {party: alice, stage: analyzer}",
                        "    optics: {party: alice, stage: analyzer}\n    colour: blue")
    err = _error_for(tmp_path, text)
    keys = [k for _, k, _ in err.problems]
    assert "instruments.alice_analyzer.colour" in keys
    assert "instruments.alice_D.channel.tagger" in keys
    assert any("already used by alice_H" in m for _, _, m in err.problems)


def test_unknown_limit_and_sim_parameter(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace("current_a: {min: 0.0, max: 0.2}",
                                              "current_a: {min: 0.0, max: 0.2}\n      voltage_v: {max: 3}")
    text = text.replace("dark_count_hz: 150", "dark_count_hz: -5")
    err = _error_for(tmp_path, text)
    keys = {k: line for line, k, _ in err.problems}
    assert "instruments.pump.limits.voltage_v" in keys
    assert "instruments.alice_H.sim.dark_count_hz" in keys
    assert keys["instruments.alice_H.sim.dark_count_hz"] == _line_of(text, "dark_count_hz: -5")
