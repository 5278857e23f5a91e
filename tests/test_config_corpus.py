"""Every value the lab's constructors would reject is refused by the config check, naming file, line and key;
a corpus of 300 semantically mutated lab descriptions either loads and opens a Lab or gives a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from qlab.config import load_config
from qlab.config.loader import builtin_config_path
from qlab.errors import ConfigError
from qlab.lab import Lab
from tests.corpora import mutated_configs

GOOD = builtin_config_path().read_text(encoding="utf-8")


def _refused(tmp_path: Path, old: str, new: str, key: str, words: str) -> ConfigError:
    assert old in GOOD
    p = tmp_path / "instruments.yaml"
    p.write_text(GOOD.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    text = str(err.value)
    assert str(p) in text and key in text and words in text, text
    line = next(line for line, k, _ in err.value.problems if key.endswith(k) or k.endswith(key))
    assert line is not None and line > 0
    return err.value


@pytest.mark.parametrize(("old", "new", "key", "words"), [
    ("input: 8, role: bob.A", "input: 99, role: bob.A", "instruments.bob_A.channel.input", "there is no input 99"),
    ("input: 8, role: bob.A", "input: 0, role: bob.A", "instruments.bob_A.channel.input", "greater than or equal to 1"),
    ("8: 0.5}", "8: 0.5, 99: 0.5}", "instruments.tagger.settings.trigger_levels_v[99]", "there is no input 99"),
    ("seed: 20261122", "seed: -1", "simulation.seed", "greater than or equal to 0"),
    ("seed: 20261122", "seed: 100000000000000000000000", "simulation.seed", "less than or equal to"),
    ("alice: {transmission: 0.8, unitary: random}", "alice: {transmission: 0.8, unitary: [1]}",
     "simulation.fibres.alice.unitary", "three ZYZ Euler angles"),
    ("alice: {transmission: 0.8, unitary: random}", "alice: {transmission: 0.8, unitary: [0, 90, x]}",
     "simulation.fibres.alice.unitary", "got"),
    ("window_ps: 2000", "window_ps: 1e23", "analysis.window_ps", "window"),
    ("window_ps: 2000", "window_ps: 100000000000000000000000", "analysis.window_ps", "less than or equal to"),
    ("accidentals_offset_ps: 50000", "accidentals_offset_ps: 1000", "analysis", "outside the coincidence window"),
    ("accidentals_offset_ps: 50000", "accidentals_offset_ps: 100000000000000000000", "analysis.accidentals_offset_ps",
     "less than or equal to"),
    ("integration_s: 1.0", "integration_s: 1e9", "analysis.integration_s", "less than or equal to"),
    ("cable_delay_ps: 18900", "cable_delay_ps: 100000000000000000000", "instruments.bob_A.sim.cable_delay_ps",
     "less than or equal to"),
    ("dead_time_ns: 22, jitter_ps: 350, cable_delay_ps: 0", "dead_time_ns: -1, jitter_ps: 350, cable_delay_ps: 0",
     "instruments.alice_H.sim.dead_time_ns", "greater than or equal to 0"),
    ("resolution_ps: 1,", "resolution_ps: 1000000000000,", "instruments.tagger.sim.resolution_ps", "less than"),
    ("pairs_per_mw: 20000", "pairs_per_mw: -3", "simulation.source.pairs_per_mw", "greater than or equal to 0"),
    ("visibility: 0.98", "visibility: 1.5", "simulation.source.visibility", "less than or equal to 1"),
    ("current_a: {min: 0.0, max: 0.2}", "current_a: {min: 0.3, max: 0.2}", "instruments.pump.limits.current_a",
     "min 0.3 is above max 0.2"),
    ("axes: {hwp: {address: 0, plate: half}}\n    optics: {party: alice",
     "axes: {hwp: {address: 16, plate: half}}\n    optics: {party: alice",
     "instruments.alice_analyzer.axes.hwp.address", "take addresses"),
    ("qwp1: {address: 1, plate: quarter}", "qwp1: {address: 2, plate: quarter}",
     "instruments.alice_compensator.axes.hwp.address", "already used by axis qwp1"),
    ("qwp1: {address: 1, plate: quarter}", "qwp1: {plate: quarter}",
     "instruments.alice_compensator.axes.qwp1.address", "needs an address"),
])
def test_values_the_lab_would_reject_are_refused_at_check_time(tmp_path, old, new, key, words):
    _refused(tmp_path, old, new, key, words)


@pytest.mark.parametrize("bad", ["max: .nan", "max: 'nan'", "max: '.inf'", "max: 'Infinity'", "max: null",
                                 "max: '-inf'"])
def test_a_limit_can_never_be_switched_off(tmp_path, bad):
    """A NaN bound compares false with everything and so would let any setpoint through; quoted spellings go
    through pydantic's float parsing, not YAML's, so they are checked there too."""
    p = tmp_path / "instruments.yaml"
    p.write_text(GOOD.replace("current_a: {min: 0.0, max: 0.2}", "current_a: {" + bad + "}"), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "instruments.pump.limits.current_a" in str(err.value)


def test_quoted_nan_in_settings_is_refused(tmp_path):
    _refused(tmp_path, "settings: {temperature_c: 25.0, current_a: 0.12}",
             "settings: {temperature_c: 25.0, current_a: 'nan'}", "instruments.pump.settings.current_a",
             "expected a number")


def test_mutated_config_corpus_gives_only_config_errors(tmp_path):
    """300 mutated lab descriptions: each loads and opens a simulated Lab, or raises ConfigError naming the
    file. Zero tracebacks: any other exception fails the test."""
    loaded, refused = [], 0
    for label, text in mutated_configs(300):
        p = tmp_path / f"{label}.yaml"
        p.write_text(text, encoding="utf-8")
        try:
            load_config(p)
        except ConfigError as exc:
            assert str(p) in str(exc), label
            assert exc.problems and all(msg for _, _, msg in exc.problems), label
            refused += 1
        else:
            loaded.append(p)
    assert refused + len(loaded) == 300
    assert refused > 200 and loaded  # the corpus exercises both outcomes
    for p in loaded:  # everything the check accepts, the lab accepts too (opening a simulated lab is fast)
        lab = Lab.from_config(str(p)).open()
        lab.close()
