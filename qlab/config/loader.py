"""Load and validate a lab description; every error names the file, the line and the key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from qlab.catalogue import DRIVERS
from qlab.config.schema import KIND_SIM_MODELS, InstrumentConfig, LabConfig
from qlab.config.yaml_lines import KeyPath, format_path, line_of, load_yaml_with_lines, read_text
from qlab.errors import ConfigError
from qlab.settings_spec import limit_quantities, parse_settings

DEFAULT_CONFIG_NAME = "instruments.yaml"

# Limit quantities each instrument kind understands; anything else is a typo the user must hear about.
CLICK_INPUTS = ("tagger", "counter")  # kinds whose inputs detectors can be wired to

# Highest input number of each tagger / counter driver (inputs are numbered from 1): the largest model of the
# family the driver speaks. The drivers learn the exact count from the device when they open; the config
# check uses these so a wiring typo (input 99) is caught before any hardware is touched.
MAX_INPUTS: dict[str, int] = {
    "swabian.timetagger": 18,  # Time Tagger Ultra (4/8/12/18 inputs), Time Tagger 20 (8)
    "picoquant.multiharp": 64,  # MultiHarp 150/160 (4–64 inputs)
    "picoquant.hydraharp": 8,  # HydraHarp 400 (up to 8 inputs)
    "idquantique.id1000": 4,  # ID1000 Time Controller
    "tausand.abacus": 4,  # the driver speaks the four-input AB1004/1504/1904
}

# Axis addresses each polarization driver accepts (ints, or hex strings on the Thorlabs buses) and whether an
# axis may leave its address out (the driver then derives it: APT channel 1, EPC400 the axis name's digit).
AXIS_ADDRESSES: dict[str, tuple[frozenset[int], bool]] = {
    "thorlabs.ell14": (frozenset(range(16)), False),  # ELLx bus addresses 0–F
    "thorlabs.k10cr1": (frozenset(range(1, 16)), True),  # APT channel
    "thorlabs.mpc320": (frozenset({1, 2, 4}), True),  # paddle bitmask
    "ozoptics.epc400": (frozenset({1, 2, 3, 4}), True),  # four fibre squeezer channels
}

# (from the kinds' settings tables, qlab/settings_spec.py)
LIMIT_QUANTITIES: dict[str, set[str]] = {kind: limit_quantities(kind)
                                         for kind in ("laser", "detector", "tagger", "counter", "polarization")}


@dataclass
class LoadedConfig:
    """A validated lab description plus where it came from (for messages and the run file)."""

    config: LabConfig
    path: str
    text: str
    lines: dict[KeyPath, int] = field(default_factory=dict)
    sim_params: dict[str, Any] = field(default_factory=dict)  # instrument name -> validated sim model

    @property
    def base_dir(self) -> Path:
        p = Path(self.path)
        return p.parent if p.is_file() else Path.cwd()

    def kind(self, name: str) -> str:
        return DRIVERS[self.config.instruments[name].driver].kind

    def names_of_kind(self, kind: str) -> list[str]:
        return [n for n in self.config.instruments if self.kind(n) == kind]


def builtin_config_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "default_lab.yaml"


def resolve_config(path: str | Path | None) -> Path:
    """--config PATH, else ./instruments.yaml if present, else the built-in simulated lab."""
    if path is not None:
        return Path(path)
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else builtin_config_path()


def load_config(path: str | Path | None = None, text: str | None = None) -> LoadedConfig:
    """Read, parse and validate a lab description. Raises ConfigError listing every problem found."""
    p = resolve_config(path) if text is None else Path(path or "<text>")
    source = str(p)
    if text is None:
        text = read_text(p)
    data, lines = load_yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise ConfigError(source, [(1, "", "expected a mapping with an 'instruments' section at the top")])
    problems: list[tuple[int | None, str, str]] = []
    cfg = _validate_sections(data, lines, problems)
    sim_params = _check_semantics(cfg, lines, problems)
    if problems:
        raise ConfigError(source, problems)
    return LoadedConfig(cfg, source, text, lines, sim_params)


def _validate_sections(data: dict[str, Any], lines: dict[KeyPath, int], problems: list) -> LabConfig:
    """Validate section by section (and instrument by instrument) so one mistake does not hide others."""
    sections = {k: v for k, v in data.items() if k != "instruments"}
    instruments = data.get("instruments")
    if instruments is None:
        problems.append((1, "instruments", "required key is missing"))
        instruments = {}
    elif not isinstance(instruments, dict):
        problems.append((line_of(lines, ("instruments",)), "instruments", "expected a mapping of names to "
                                                                          "instrument blocks"))
        instruments = {}
    try:
        cfg = LabConfig.model_validate({**sections, "instruments": {}})
    except ValidationError as exc:
        problems.extend(_describe(err, lines) for err in exc.errors())
        cfg = LabConfig(instruments={})
    for name, block in instruments.items():
        try:
            cfg.instruments[str(name)] = InstrumentConfig.model_validate(block)
        except ValidationError as exc:
            for err in exc.errors():
                problems.append(_describe({**err, "loc": ("instruments", name, *err["loc"])}, lines))
    return cfg


def _describe(err: dict[str, Any], lines: dict[KeyPath, int]) -> tuple[int | None, str, str]:
    loc: KeyPath = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
    key = format_path(loc)
    kind = err["type"]
    if kind == "missing":
        msg = "required key is missing"
    elif kind == "extra_forbidden":
        msg = "unknown key (check the spelling; see the schema in qlab/config/schema.py)"
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
        if not isinstance(err.get("input"), dict):  # a whole section as "got" says nothing useful
            got = repr(err.get("input"))
            msg += f" (got {got if len(got) <= 80 else got[:77] + '...'})"
    return line_of(lines, loc), key, msg


def _check_semantics(cfg: LabConfig, lines: dict[KeyPath, int], problems: list) -> dict[str, Any]:
    def add(path: KeyPath, msg: str) -> None:
        problems.append((line_of(lines, path), format_path(path), msg))

    sim_params: dict[str, Any] = {}
    roles: dict[str, str] = {}
    inputs: dict[tuple[str, int], str] = {}
    for name, inst in cfg.instruments.items():
        base: KeyPath = ("instruments", name)
        entry = DRIVERS.get(inst.driver)
        if entry is None:
            add((*base, "driver"), f"unknown driver {inst.driver!r}; expected one of {sorted(DRIVERS)}")
            continue
        for q in inst.limits:
            if q not in LIMIT_QUANTITIES[entry.kind]:
                add((*base, "limits", q), f"unknown limit for a {entry.kind}; expected one of "
                                          f"{sorted(LIMIT_QUANTITIES[entry.kind])}")
        for q, lim in inst.limits.items():
            if lim.min is not None and lim.max is not None and lim.min > lim.max:
                add((*base, "limits", q), f"min {lim.min} is above max {lim.max}")
        _check_settings(inst, entry.kind, base, add, MAX_INPUTS.get(inst.driver))
        try:
            sim_params[name] = KIND_SIM_MODELS[entry.kind].model_validate(inst.sim)
        except ValidationError as exc:
            for err in exc.errors():
                line, key, msg = _describe({**err, "loc": (*base, "sim", *err["loc"])}, lines)
                problems.append((line, key, msg))
        if entry.kind == "detector":
            if inst.channel is None:
                add(base, "a detector needs a 'channel' (tagger, input, role) so analysis knows its role")
        elif inst.channel is not None:
            add((*base, "channel"), f"only detectors have a 'channel'; this is a {entry.kind}")
        if entry.kind == "polarization":
            if not inst.axes:
                add(base, "a polarization controller needs at least one entry under 'axes'")
            if inst.optics is None:
                add(base, "a polarization controller needs 'optics' (party, stage) to place it in the lab")
            _check_axes(inst, base, add)
    for name, inst in cfg.instruments.items():
        if inst.channel is None or inst.driver not in DRIVERS:
            continue
        path: KeyPath = ("instruments", name, "channel")
        tag = cfg.instruments.get(inst.channel.tagger)
        if tag is None or DRIVERS.get(tag.driver) is None or DRIVERS[tag.driver].kind not in CLICK_INPUTS:
            add((*path, "tagger"), f"{inst.channel.tagger!r} is not a time tagger or coincidence counter in this file")
        elif inst.channel.input > MAX_INPUTS.get(tag.driver, 255):
            add((*path, "input"), f"{inst.channel.tagger} ({tag.driver}) has inputs 1–{MAX_INPUTS[tag.driver]}; "
                                  f"there is no input {inst.channel.input}")
        key = (inst.channel.tagger, inst.channel.input)
        if key in inputs:
            add((*path, "input"), f"input {key[1]} of {key[0]} is already used by {inputs[key]}")
        inputs[key] = name
        if inst.channel.role in roles:
            add((*path, "role"), f"role {inst.channel.role} is already taken by {roles[inst.channel.role]}")
        roles[inst.channel.role] = name
    if not any(DRIVERS.get(i.driver) and DRIVERS[i.driver].kind in CLICK_INPUTS for i in cfg.instruments.values()):
        add(("instruments",), "the lab has no time tagger or coincidence counter")
    return sim_params


def _check_settings(inst: InstrumentConfig, kind: str, base: KeyPath, add: Callable[[KeyPath, str], None],
                    max_input: int | None = None) -> None:
    """Each ``settings`` value against its kind's table (known key, type, input/axis), the instrument's
    input count and its ``limits``, so a bad setpoint is refused by ``qlab config check`` rather than when the
    lab opens."""
    values, problems = parse_settings(kind, inst.settings, list(inst.axes) if kind == "polarization" else None)
    for path, msg in problems:
        add((*base, "settings", *path), msg)
    for sv in values:
        if sv.spec.index == "input" and max_input is not None and not 1 <= sv.index <= max_input:
            add((*base, "settings", *sv.path), f"{inst.driver} has inputs 1–{max_input}; there is no input {sv.index}")
            continue
        lim = inst.limits.get(sv.spec.limit) if sv.spec.limit is not None else None
        if lim is None:
            continue
        unit = f" {sv.spec.unit}" if sv.spec.unit else ""
        if lim.min is not None and sv.value < lim.min or lim.max is not None and sv.value > lim.max:
            add((*base, "settings", *sv.path), f"{sv.value}{unit} is outside limits.{sv.spec.limit} "
                                               f"[{lim.min}, {lim.max}]{unit}")


def _check_axes(inst: InstrumentConfig, base: KeyPath, add: Callable[[KeyPath, str], None]) -> None:
    """Each axis address is one the driver can send (and no two axes share one)."""
    rule = AXIS_ADDRESSES.get(inst.driver)
    if rule is None:
        return
    allowed, optional = rule
    used: dict[int, str] = {}
    for axis, spec in inst.axes.items():
        path = (*base, "axes", axis, "address")
        addr = spec.address
        if addr is None:
            if not optional:
                add(path, f"{inst.driver} needs an address for each axis, one of {sorted(allowed)}")
            elif inst.driver == "ozoptics.epc400" and not str(axis)[-1:].isdigit():
                add(path, "give an address (1–4) or end the axis name with its channel number (ch1 … ch4)")
            continue
        try:
            number = int(addr, 16) if isinstance(addr, str) else int(addr)
        except ValueError:
            add(path, f"expected an address number (or a hex digit), got {addr!r}")
            continue
        if isinstance(addr, str) and inst.driver == "ozoptics.epc400":
            add(path, f"expected a channel number 1–4, got {addr!r}")
        elif number not in allowed:
            add(path, f"{inst.driver} axes take addresses {sorted(allowed)}, got {addr!r}")
        elif number in used:
            add(path, f"address {addr!r} is already used by axis {used[number]}")
        used[number] = str(axis)
