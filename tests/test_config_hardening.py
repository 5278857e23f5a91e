"""Damaged and hostile lab descriptions end in a ConfigError naming the file (and line), never a traceback,
a hang or runaway memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlab.config import load_config
from qlab.config.loader import builtin_config_path
from qlab.errors import ConfigError

GOOD = builtin_config_path().read_text(encoding="utf-8")


def _write(tmp_path: Path, data: bytes | str) -> Path:
    p = tmp_path / "instruments.yaml"
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def _error(tmp_path: Path, data: bytes | str) -> ConfigError:
    p = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(p) in str(err.value)
    return err.value


def test_non_utf8_file_names_the_byte(tmp_path):
    data = GOOD.encode("utf-8")
    cut = data.index(b"simulation:")
    err = _error(tmp_path, data[:cut] + b"\xff\xfe" + data[cut:])
    assert f"not UTF-8 text at byte {cut}" in str(err)
    assert err.problems[0][0] == data[:cut].count(b"\n") + 1


def test_alias_bomb_is_refused_before_expansion(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    err = _error(tmp_path, "\n".join(lines) + "\n")
    assert "expands to more than 200000 values" in str(err)


def test_merge_keys_and_unknown_aliases_are_refused_but_plain_aliases_load(tmp_path):
    assert "merge keys" in str(_error(tmp_path, "base: {a: 1}\nother:\n  <<: {a: 2}\n"))
    assert "alias" in str(_error(tmp_path, GOOD.replace("seed: 20261122", "seed: *nosuch")))
    plain = "limits: {position_deg: {min: -360, max: 720}}"
    shared = GOOD.replace(plain, "limits: &lim {position_deg: {min: -360, max: 720}}", 1).replace(plain, "limits: *lim")
    loaded = load_config(_write(tmp_path, shared))  # yaml.dump writes such aliases for repeated objects
    assert loaded.config.instruments["bob_analyzer"].limits["position_deg"].max == 720


def test_deep_nesting_is_bounded(tmp_path):
    err = _error(tmp_path, "x: " + "[" * 3000 + "]" * 3000 + "\n")
    assert "nesting deeper than" in str(err)


def test_a_list_as_a_key_is_refused(tmp_path):
    err = _error(tmp_path, GOOD.replace("lab:\n", "? [1, 2]\n: 3\nlab:\n", 1))
    assert "a key must be a plain value" in str(err)


def test_integer_and_string_spellings_of_one_key_are_duplicates(tmp_path):
    text = GOOD.replace("trigger_levels_v: {1: 0.5,", "trigger_levels_v: {'1': 2.4, 1: 0.5,")
    err = _error(tmp_path, text)
    assert "trigger_levels_v[1]: duplicate key" in str(err)


@pytest.mark.parametrize("bad", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused(tmp_path, bad):
    err = _error(tmp_path, GOOD.replace("current_a: {min: 0.0, max: 0.2}", f"current_a: {{min: 0.0, max: {bad}}}"))
    assert "instruments.pump.limits.current_a.max" in str(err)
    assert "not a finite number" in str(err)


def test_oversized_file_is_refused_without_parsing(tmp_path):
    err = _error(tmp_path, GOOD + "#" * (1 << 20))
    assert "larger than" in str(err)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_lab_descriptions_give_config_errors_only(tmp_path, data):
    """Byte-level mutations of the real lab description: it loads, or a ConfigError says why."""
    raw = bytearray(GOOD.encode("utf-8"))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        pos = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete":
            del raw[pos: pos + data.draw(st.integers(1, 40))]
        elif op == "insert":
            raw[pos:pos] = data.draw(st.sampled_from([b"&x ", b"*x", b"<<: ", b"[", b"{", b": ", b"\n  ", b"-",
                                                      b".nan", b"1e400", b"'", b"\t", b"\xff", b"!!python/name:x"]))
        else:
            del raw[pos:]
        if not raw:
            raw = bytearray(b"x")
    p = _write(tmp_path, bytes(raw))
    try:
        load_config(p)
    except ConfigError as exc:
        assert str(p) in str(exc)
