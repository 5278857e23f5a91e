"""Corpora of damaged inputs for the hardening tests and scripts/input_corpora.py.

``mutated_configs`` makes semantically mutated lab descriptions from the built-in one (type swaps, out-of-range
numbers, wrong shapes, removed and renamed keys, wrong wiring); ``damaged_files`` makes damaged run files
and PTU files from small good ones (truncated, bit-flipped, zeroed blocks, wrong structure, missing
attributes, broken metadata JSON, garbled PTU header). Both are deterministic for a given seed.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from qlab.config.loader import builtin_config_path

# -- mutated lab descriptions ----------------------------------------------------------------------------------

_ODD_VALUES: list[Any] = [None, True, "x", "nan", "-inf", "1e999", "", [], {}, [1], {"a": 1}, -1, 0, 1,
                          2**70, -(2**70), 1e23, -1e23, 1e-300, 0.5, 99, 255, 256, "sim", "alice.Q"]
_WIRING_INPUTS = [0, -1, 9, 18, 19, 64, 99, 255, 256, 1.5, "1", "one", None]
_TOP_SECTIONS = ["lab", "simulation", "analysis"]


def _leaves(node: Any, path: tuple = ()) -> list[tuple]:
    """Every key path in ``node`` (inner nodes and leaves)."""
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _leaves(v, (*path, i))
    return out


def _get(root: Any, path: tuple) -> Any:
    for p in path:
        root = root[p]
    return root


def _set(root: Any, path: tuple, value: Any) -> None:
    _get(root, path[:-1])[path[-1]] = value


def _number_out_of_range(v: Any, rnd: random.Random) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return rnd.choice([1e23, -1, 2**64])
    return rnd.choice([-v - 1, v * 1e20, -1e23, 1e23, 2**63, -(2**63) - 1, 0, -0.5, v + 1e12])


def _mutations(rnd: random.Random) -> list[tuple[str, Callable[[dict], None]]]:
    def type_swap(d: dict) -> None:
        path = rnd.choice(_leaves(d))
        _set(d, path, copy.deepcopy(rnd.choice(_ODD_VALUES)))

    def out_of_range(d: dict) -> None:
        paths = [p for p in _leaves(d) if isinstance(_get(d, p), int | float)]
        path = rnd.choice(paths)
        _set(d, path, _number_out_of_range(_get(d, path), rnd))

    def wrong_shape(d: dict) -> None:
        path = rnd.choice(_leaves(d))
        v = _get(d, path)
        if isinstance(v, dict):
            _set(d, path, list(v.values()))
        elif isinstance(v, list):
            _set(d, path, {str(i): x for i, x in enumerate(v)} if rnd.random() < 0.5 else v[:1])
        else:
            _set(d, path, rnd.choice([[v], {"value": v}, [v, v, v, v]]))

    def remove_key(d: dict) -> None:
        path = rnd.choice([p for p in _leaves(d) if isinstance(_get(d, p[:-1]), dict)])
        del _get(d, path[:-1])[path[-1]]

    def rename_key(d: dict) -> None:
        path = rnd.choice([p for p in _leaves(d) if isinstance(_get(d, p[:-1]), dict)])
        parent = _get(d, path[:-1])
        key = path[-1]
        new = rnd.choice([f"{key}s", str(key).upper(), f"{str(key)[:-1]}", f"_{key}", 7])
        if new not in parent:
            parent[new] = parent.pop(key)

    def wrong_wiring(d: dict) -> None:
        dets = [n for n, b in d["instruments"].items() if "channel" in b]
        ch = d["instruments"][rnd.choice(dets)]["channel"]
        choice = rnd.randrange(4)
        if choice == 0:
            ch["input"] = rnd.choice(_WIRING_INPUTS)
        elif choice == 1:
            ch["tagger"] = rnd.choice(["nosuch", "pump", "alice_H", "", 3])
        elif choice == 2:
            ch["role"] = rnd.choice(["alice.H", "bob.A", "carol.H", "alice.X", "", 1])
        else:
            other = d["instruments"][rnd.choice(dets)]["channel"]
            ch["input"] = other["input"]  # two detectors on one input (or itself: still valid)

    def bad_settings(d: dict) -> None:
        inst = d["instruments"][rnd.choice(["pump", "tagger", "alice_analyzer"])]
        settings = inst.setdefault("settings", {})
        key = rnd.choice(["current_a", "temperature_c", "trigger_levels_v", "delays_ps", "position_deg", "nosuch"])
        settings[key] = rnd.choice([1e23, -5, "nan", {1: 3.0}, {99: 0.1}, {0: 0.1}, {"hwp": 1e9}, [1, 2], True])

    def bad_limits(d: dict) -> None:
        inst = d["instruments"][rnd.choice(["pump", "tagger", "alice_analyzer"])]
        limits = inst.setdefault("limits", {})
        key = rnd.choice(list(limits) or ["current_a"])
        limits[key] = rnd.choice([{"min": 1, "max": 0}, {"max": "nan"}, {"min": "-inf"}, {"max": None},
                                  {"max": "0.1"}, [0, 1], 5, {"min": 0, "max": 1, "step": 2}])

    def bad_sim(d: dict) -> None:
        sections = [("simulation", "source"), ("simulation", "fibres", "alice"), ("simulation", "fibres", "bob"),
                    ("instruments", "pump", "sim"), ("instruments", "alice_H", "sim"), ("instruments", "tagger", "sim")]
        block = _get(d, rnd.choice(sections))
        key = rnd.choice(list(block))
        block[key] = rnd.choice([-1, 1e23, 2, 0, "random", [1], [0, 0], [0, 90, 0], [0, 90, "x"], "nan", None])

    def bad_top(d: dict) -> None:
        section = rnd.choice(_TOP_SECTIONS)
        d[section] = rnd.choice([None, [], "x", 5, {"nosuch": 1}, {}])

    return [("type_swap", type_swap), ("out_of_range", out_of_range), ("wrong_shape", wrong_shape),
            ("remove_key", remove_key), ("rename_key", rename_key), ("wrong_wiring", wrong_wiring),
            ("bad_settings", bad_settings), ("bad_limits", bad_limits), ("bad_sim", bad_sim), ("bad_top", bad_top)]


def mutated_configs(n: int = 300, seed: int = 14) -> list[tuple[str, str]]:
    """``n`` (label, YAML text) pairs, each the built-in lab with one to three semantic mutations."""
    rnd = random.Random(seed)
    good = yaml.safe_load(builtin_config_path().read_text(encoding="utf-8"))
    kinds = _mutations(rnd)
    out = []
    for i in range(n):
        d = copy.deepcopy(good)
        labels = []
        for _ in range(1 + (i % 3 == 0) + (i % 7 == 0)):
            label, fn = kinds[(i + len(labels)) % len(kinds)] if not labels else rnd.choice(kinds)
            try:
                fn(d)
            except (KeyError, IndexError, TypeError, AttributeError, ValueError):
                continue  # an earlier mutation removed what this one edits; the file stays mutated
            labels.append(label)
        out.append((f"{i:03d}-{'+'.join(labels) or 'none'}", yaml.safe_dump(d, sort_keys=False, width=200)))
    return out


# -- damaged run files and PTU files ---------------------------------------------------------------------------

def make_good_run_file(path: Path, n_tags: int = 150_000, seed: int = 1) -> Path:
    """A small complete qlab run file (two appends of tags, settings, a result). The default holds two whole
    HDF5 chunks (compressed by qlab, written directly) and a partial one (compressed by the HDF5 filter), so
    damage reaches both kinds."""
    import numpy as np

    from qlab.storage.runfile import RunFile
    from qlab.types import TagChunk

    rng = np.random.default_rng(seed)
    with RunFile(path, taggers=["tagger"], procedure="test", parameters={"x": 1}) as rf:
        t0 = 0
        for _ in range(2):
            t = np.sort(rng.integers(t0, t0 + 10**9, n_tags // 2)).astype(np.int64)
            c = rng.integers(1, 9, t.size).astype(np.int16)
            rf.append_tags(TagChunk(t, c, t0, t0 + 10**9))
            t0 += 10**9
        rf.log_settings("pump", {"current_a": 0.1})
        rf.add_result("x", {"value": 1.0})
        rf.finish()
    return path


def make_good_ptu(path: Path, n_tags: int = 20_000, seed: int = 2) -> Path:
    import numpy as np

    from qlab.storage.ptu import write_ptu_t2

    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 10**11, n_tags)).astype(np.int64)  # 0.1 s: several T2 overflows
    write_ptu_t2(path, t, rng.integers(0, 8, n_tags), resolution_s=1e-12)
    return path


def _h5_edit(src: Path, dst: Path, edit: Callable[[Any], None]) -> None:
    import shutil

    import h5py

    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)


def _run_file_structural(good: Path, out: Path) -> list[tuple[str, Path]]:
    """Well-formed HDF5 files with the wrong structure, missing attributes or broken metadata."""
    def put(name: str, edit: Callable[[Any], None]) -> tuple[str, Path]:
        dst = out / f"run-{name}.h5"
        _h5_edit(good, dst, edit)
        return name, dst

    def del_(key: str) -> Callable[[Any], None]:
        return lambda f: f.__delitem__(key)

    def attr(path: str, key: str, value: Any) -> Callable[[Any], None]:
        def edit(f: Any) -> None:
            f[path].attrs[key] = value
        return edit

    def replace(key: str, data: Any) -> Callable[[Any], None]:
        def edit(f: Any) -> None:
            del f[key]
            f[key] = data
        return edit

    import numpy as np

    cases = [
        put("no-format-name", lambda f: f.attrs.__delitem__("format_name")),
        put("no-photon-data", del_("photon_data")),
        put("no-timestamps", del_("photon_data/timestamps")),
        put("no-detectors", del_("photon_data/detectors")),
        put("no-timestamps-unit", del_("photon_data/timestamps_specs/timestamps_unit")),
        put("no-user-qlab-metadata", del_("user/qlab/metadata")),
        put("no-status", del_("user/qlab/status")),
        put("no-duration", del_("user/qlab/duration_s")),
        put("metadata-json-broken", attr("user/qlab/metadata", "parameters", "{not json")),
        put("metadata-json-list", attr("user/qlab/metadata", "taggers", '{"a": 1}')),
        put("metadata-json-number", attr("user/qlab/metadata", "parameters", "5")),
        put("metadata-wrong-type", attr("user/qlab/metadata", "parameters", np.arange(3))),
        put("timestamps-unit-string", replace("photon_data/timestamps_specs/timestamps_unit", "ps")),
        put("timestamps-unit-zero", replace("photon_data/timestamps_specs/timestamps_unit", 0.0)),
        put("timestamps-unit-nan", replace("photon_data/timestamps_specs/timestamps_unit", np.nan)),
        put("timestamps-2d", replace("photon_data/timestamps", np.zeros((3, 3), np.int64))),
        put("timestamps-float", replace("photon_data/timestamps", np.linspace(0, 1, 10))),
        put("timestamps-strings", replace("photon_data/timestamps", np.array([b"a", b"b"]))),
        put("detectors-short", replace("photon_data/detectors", np.zeros(3, np.uint8))),
        put("timestamps-a-group", lambda f: (f.__delitem__("photon_data/timestamps"),
                                             f.create_group("photon_data/timestamps"))),
        put("status-empty", replace("user/qlab/status", np.zeros(0, np.int8))),
        put("duration-empty", replace("user/qlab/duration_s", np.zeros(0))),
        put("results-not-json", replace("user/qlab/results_log", np.array([b"{broken"]))),
        put("results-not-strings", replace("user/qlab/results_log", np.arange(4))),
        put("results-json-list", replace("user/qlab/results_log", np.array([b"[1, 2]"]))),
        put("settings-not-json", replace("user/qlab/settings_log", np.array([b"nope"]))),
        put("gaps-wrong-shape", replace("user/qlab/gaps_0", np.zeros(5))),
        put("withheld-empty", replace("user/qlab/withheld_tags", np.zeros(0, np.int64))),
        put("user-qlab-a-dataset", lambda f: (f.__delitem__("user/qlab"), f.create_dataset("user/qlab", data=1))),
        put("photon-data-a-dataset", lambda f: (f.__delitem__("photon_data"),
                                                f.create_dataset("photon_data", data=np.arange(3)))),
    ]
    return cases


def _byte_damage(src: bytes, rnd: random.Random, stem: str, kind: str, out: Path) -> list[tuple[str, Path]]:
    cases: list[tuple[str, bytes]] = []
    n = len(src)
    for frac in (0.01, 0.05, 0.25, 0.5, 0.75, 0.9, 0.99):
        cases.append((f"truncated-{int(frac * 100)}pc", src[: int(n * frac)]))
    cases.append(("empty", b""))
    cases.append(("magic-only", src[:8]))
    for k in range(6):
        b = bytearray(src)
        for _ in range(1000 if k < 4 else 50):
            pos = rnd.randrange(n)
            b[pos] ^= 1 << rnd.randrange(8)
        cases.append((f"bitflip-{'1000' if k < 4 else '50'}-{k}", bytes(b)))
    for k in range(6):
        b = bytearray(src)
        size = rnd.choice([512, 4096, 16384])
        start = rnd.randrange(0, max(1, n - size)) if k else 0
        b[start:start + size] = bytes(min(size, n - start))
        cases.append((f"zeroed-{size}-at-{start}", bytes(b)))
    b = bytearray(src)
    b[n // 2: n // 2 + 4096] = bytes(rnd.getrandbits(8) for _ in range(min(4096, n - n // 2)))
    cases.append(("garbage-block-middle", bytes(b)))
    cases.append(("doubled", src + src))
    out_paths = []
    for name, data in cases:
        p = out / f"{stem}-{name}.{kind}"
        p.write_bytes(data)
        out_paths.append((name, p))
    return out_paths


def _ptu_header_damage(src: bytes, rnd: random.Random, out: Path) -> list[tuple[str, Path]]:
    """PTU files whose header tags are garbled: names, types, lengths, the record count, Header_End."""
    import struct

    cases: list[tuple[str, bytes]] = []
    header_end = src.index(b"Header_End") + 48

    def sub(data: bytes, at: int, new: bytes) -> bytes:
        return data[:at] + new + data[at + len(new):]

    for ident in (b"TTResult_NumberOfRecords", b"TTResultFormat_TTTRRecType", b"MeasDesc_GlobalResolution",
                  b"TTResultFormat_BitsPerRecord", b"Measurement_Mode"):
        at = src.index(ident)
        cases.append((f"renamed-{ident.decode()}", sub(src, at, b"X" * len(ident))))
        cases.append((f"type-garbled-{ident.decode()}", sub(src, at + 36, struct.pack("<I", 0xDEADBEEF))))
        cases.append((f"value-max-{ident.decode()}", sub(src, at + 40, struct.pack("<q", 2**62))))
        cases.append((f"value-neg-{ident.decode()}", sub(src, at + 40, struct.pack("<q", -5))))
        cases.append((f"value-zero-{ident.decode()}", sub(src, at + 40, bytes(8))))
    at = src.index(b"MeasDesc_GlobalResolution")
    cases.append(("resolution-nan", sub(src, at + 40, struct.pack("<d", float("nan")))))
    cases.append(("resolution-negative", sub(src, at + 40, struct.pack("<d", -1e-12))))
    at = src.index(b"File_GUID")
    cases.append(("ansi-length-huge", sub(src, at + 40, struct.pack("<q", 2**60))))
    cases.append(("ansi-length-negative", sub(src, at + 40, struct.pack("<q", -8))))
    cases.append(("no-header-end", src.replace(b"Header_End", b"Header_Xxx")))
    cases.append(("header-only", src[:header_end]))
    cases.append(("wrong-version", sub(src, 8, b"9.9.99\0\0")))
    cases.append(("wrong-magic", sub(src, 0, b"PQTTTX\0\0")))
    for k in range(8):
        b = bytearray(src)
        for _ in range(20):
            b[rnd.randrange(header_end)] ^= 1 << rnd.randrange(8)
        cases.append((f"header-bitflip-{k}", bytes(b)))
    out_paths = []
    for name, data in cases:
        p = out / f"ptu-{name}.ptu"
        p.write_bytes(data)
        out_paths.append((name, p))
    return out_paths


def damaged_files(out: Path, seed: int = 14) -> list[tuple[str, Path]]:
    """Damaged run files and PTU files written under ``out``: (label, path) pairs."""
    out.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    good_run = make_good_run_file(out / "good-run.h5")
    good_ptu = make_good_ptu(out / "good.ptu")
    cases = [(f"run-{n}", p) for n, p in _byte_damage(good_run.read_bytes(), rnd, "run", "h5", out)]
    cases += [(f"run-{n}", p) for n, p in _run_file_structural(good_run, out)]
    cases += [(f"ptu-{n}", p) for n, p in _byte_damage(good_ptu.read_bytes(), rnd, "ptu", "ptu", out)]
    cases += [(f"ptu-{n}", p) for n, p in _ptu_header_damage(good_ptu.read_bytes(), rnd, out)]
    (out / "not-a-file.h5").mkdir(exist_ok=True)
    cases.append(("directory", out / "not-a-file.h5"))
    txt = out / "text.h5"
    txt.write_text(json.dumps({"not": "hdf5"}))
    cases.append(("text", txt))
    return cases
