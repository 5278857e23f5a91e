"""What each instrument kind's settings are, as plain data: name, unit, type, limit key, config key, indexing,
snapshot entry, readable/writable and a GUI hint.

This is a leaf module (it imports nothing from qlab) so the config layer can validate ``settings:`` blocks
without importing the instruments package. ``qlab.instruments.settings`` binds each spec to its getter and
setter; snapshots, ``apply_settings``, limit checks, ``qlab config check`` and the GUI panels all read these
tables, so a setting is declared once.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Any, Literal

Index = Literal["input", "axis", "map"] | None  # input: tagger/counter inputs; axis: controller axes;
# map: the getter returns {label: value} (e.g. a laser's protection circuits)


@dataclass(frozen=True)
class GuiHint:
    """How a panel edits or shows a setting.

    ``widget``: "spin" (number), "check" (bool) or "readout" (a label). ``apply``: "change" writes on every
    committed edit; "button" shows the actual value beside a target editor written only by its button.
    ``low``/``high`` bound the editor where the instrument's limits do not.
    """

    widget: Literal["spin", "check", "readout"] = "spin"
    decimals: int = 3
    step: float = 1.0
    low: float | None = None
    high: float | None = None
    apply: Literal["change", "button"] = "change"
    button: str = "Set"
    label: str = ""


@dataclass(frozen=True)
class SettingSpec:
    """One setting of an instrument kind.

    ``name`` keys the GUI editor; ``snapshot`` is the snapshot/cache entry (a format string with ``{index}``
    and ``{letter}`` for indexed settings); ``config_key`` the key under ``settings:`` in instruments.yaml
    (None: not settable from the config); ``limit`` the limit quantity checked before every write;
    ``capability`` a detector capability the setting needs at all, ``write_capability`` one it needs to write.
    """

    name: str
    unit: str
    type: type
    snapshot: str = ""
    config_key: str | None = None
    limit: str | None = None
    index: Index = None
    readable: bool = True
    writable: bool = True
    capability: str | None = None
    write_capability: str | None = None
    gui: GuiHint | None = None

    def entry(self, index: Any = None) -> str:
        """Snapshot/cache entry name of this setting at ``index``."""
        if self.index is None:
            return self.snapshot
        letter = string.ascii_uppercase[index - 1] if isinstance(index, int) and 0 < index <= 26 else str(index)
        return self.snapshot.format(index=index, letter=letter)

    def type_error(self, v: Any) -> str | None:
        """Why ``v`` is not a value of this setting's type (None if it is)."""
        if self.type is bool:
            return None if isinstance(v, bool) else f"expected true or false, got {v!r}"
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"expected a number ({self.type.__name__}), got {v!r}"
        if not math.isfinite(v):
            return f"expected a finite number, got {v!r}"
        if self.type is int and v != int(v):
            return f"expected a whole number of {self.unit or 'units'}, got {v!r}"
        return None


KIND_SETTINGS: dict[str, tuple[SettingSpec, ...]] = {
    "laser": (
        SettingSpec("output", "bool", bool, "output"),  # switched by the panel's emission buttons, never by config
        SettingSpec("current", "A", float, "current_set", "current_a", "current_a",
                    gui=GuiHint(decimals=4, step=0.005, label="current")),
        SettingSpec("power", "mW", float, "", "power_mw", "power_mw", readable=False),
        SettingSpec("temperature", "°C", float, "temperature_set", "temperature_c", "temperature_c",
                    gui=GuiHint(decimals=2, step=0.1, label="temperature")),
        SettingSpec("current_meas", "A", float, "current_meas", writable=False,
                    gui=GuiHint("readout", decimals=4, label="current (measured)")),
        SettingSpec("temperature_meas", "°C", float, "temperature_meas", writable=False,
                    gui=GuiHint("readout", decimals=2, label="temperature (measured)")),
        SettingSpec("power_meas", "mW", float, "power_meas", writable=False,
                    gui=GuiHint("readout", decimals=2, label="power (measured)")),
        SettingSpec("protection", "tripped", bool, "protection_{index}", index="map", writable=False),
    ),
    "detector": (
        SettingSpec("enabled", "bool", bool, "enabled", "enabled", write_capability="enable",
                    gui=GuiHint("check", label="enabled")),
        SettingSpec("efficiency", "", float, "efficiency", "efficiency", "efficiency", capability="efficiency",
                    gui=GuiHint(decimals=3, step=0.01, low=0.0, high=1.0, label="efficiency")),
        SettingSpec("dead_time_ns", "ns", float, "dead_time", "dead_time_ns", "dead_time_ns", capability="dead_time",
                    gui=GuiHint(decimals=1, step=1.0, low=0.0, high=1e6, label="dead time")),
        SettingSpec("bias", "V", float, "bias", "bias_v", "bias_v", capability="bias",
                    gui=GuiHint(decimals=2, step=0.1, label="bias")),
        SettingSpec("bias_current", "µA", float, "bias_current", "bias_current_ua", "bias_current_ua",
                    capability="bias_current", gui=GuiHint(decimals=2, step=0.1, label="bias current")),
        # No model reads its threshold back, so it is set from the config only and never shown as current.
        SettingSpec("threshold", "V", float, "", "threshold_v", "threshold_v", capability="threshold",
                    readable=False),
        SettingSpec("gate", "bool", bool, "gate_closed", "gate", capability="gate",
                    gui=GuiHint("check", label="gate closed")),
    ),
    "tagger": (
        SettingSpec("delay", "ps", int, "delay_ch{index}", "delays_ps", "delay_ps", index="input",
                    gui=GuiHint(decimals=0, step=100, label="delay")),
        SettingSpec("trigger_level", "V", float, "trigger_level_ch{index}", "trigger_levels_v", "trigger_level_v",
                    index="input", gui=GuiHint(decimals=3, step=0.05, low=-2.5, high=2.5, label="trigger level")),
    ),
    "counter": (
        SettingSpec("sampling", "s", float, "sampling", "sampling_s", "sampling_s",
                    gui=GuiHint(decimals=3, step=0.1, low=0.001, high=1000.0, label="sampling")),
        SettingSpec("coincidence_window", "ps", int, "coincidence_window", "coincidence_window_ps",
                    "coincidence_window_ps", gui=GuiHint(decimals=0, step=1000, low=1000, high=50_000_000,
                                                         label="window")),
        SettingSpec("delay", "ps", int, "delay_{letter}", "delays_ps", "delay_ps", index="input",
                    gui=GuiHint(decimals=0, step=100, label="delay")),
    ),
    "polarization": (
        SettingSpec("position", "deg", float, "position_{index}", "position_deg", "position_deg", index="axis",
                    gui=GuiHint(decimals=2, step=1.0, apply="button", button="Move", label="position")),
    ),
}


def specs_of(kind: str) -> tuple[SettingSpec, ...]:
    """The settings table of ``kind`` (empty for an unknown kind)."""
    return KIND_SETTINGS.get(kind, ())


def config_specs(kind: str) -> dict[str, SettingSpec]:
    """``settings:`` key in instruments.yaml -> its spec, for ``kind``."""
    return {s.config_key: s for s in specs_of(kind) if s.config_key is not None}


def limit_quantities(kind: str) -> set[str]:
    """Limit quantities ``kind`` understands (anything else under ``limits:`` is a typo)."""
    return {s.limit for s in specs_of(kind) if s.limit is not None}


# Unit of every limit quantity, for messages and limit tables.
LIMIT_UNITS: dict[str, str] = {s.limit: s.unit for specs in KIND_SETTINGS.values() for s in specs
                               if s.limit is not None}


@dataclass(frozen=True)
class SettingValue:
    """One value of a ``settings:`` block, resolved against its kind's table. ``path`` is the key path under
    ``settings`` (e.g. ``("delays_ps", 3)``) for messages."""

    spec: SettingSpec
    index: Any
    value: Any
    path: tuple[str | int, ...]


def parse_settings(kind: str, settings: dict[Any, Any], axes: list[str] | None = None
                   ) -> tuple[list[SettingValue], list[tuple[tuple[str | int, ...], str]]]:
    """Resolve a ``settings:`` block of instruments.yaml against ``kind``'s table.

    Indexed settings take a mapping (``delays_ps: {1: 0, 2: 1200}``, ``position_deg: {hwp: 45}``); a
    controller with one axis also takes a plain number, and ``position_deg.AXIS: deg`` names one axis.
    Returns (values, problems): each problem is (key path under ``settings``, message); type and unknown
    keys are checked here, limits by the caller.
    """
    table = config_specs(kind)
    values: list[SettingValue] = []
    problems: list[tuple[tuple[str | int, ...], str]] = []

    def add(spec: SettingSpec, index: Any, v: Any, path: tuple[str | int, ...]) -> None:
        why = spec.type_error(v)
        if why is not None:
            problems.append((path, why))
        else:
            values.append(SettingValue(spec, index, spec.type(v), path))

    for key, v in settings.items():
        base, _, suffix = str(key).partition(".")
        spec = table.get(str(key)) or (table.get(base) if suffix else None)
        if spec is None:
            problems.append(((key,), f"unknown setting for a {kind}; expected one of {sorted(table)}"))
            continue
        if suffix:  # position_deg.hwp: 45
            if spec.index != "axis":
                problems.append(((key,), f"{base} takes no '.{suffix}' suffix"))
            elif axes is not None and suffix not in axes:
                problems.append(((key,), f"unknown axis {suffix!r}; expected one of {axes}"))
            else:
                add(spec, suffix, v, (key,))
            continue
        if spec.index is None or (spec.index == "axis" and not isinstance(v, dict)):
            if spec.index == "axis" and axes is not None and len(axes) != 1:
                problems.append(((key,), f"name the axis: a mapping {{axis: {spec.unit}}} with axes {axes}"))
            else:
                add(spec, None, v, (key,))
            continue
        if not isinstance(v, dict):
            what = "input" if spec.index == "input" else "axis"
            problems.append(((key,), f"expected a mapping {{{what}: {spec.unit}}}, got {v!r}"))
            continue
        for idx, item in v.items():
            if spec.index == "input":
                if isinstance(idx, str) and idx.isdigit():
                    idx = int(idx)
                if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
                    problems.append(((key, idx), f"expected an input number, got {idx!r}"))
                    continue
            elif axes is not None and str(idx) not in axes:
                problems.append(((key, idx), f"unknown axis {idx!r}; expected one of {axes}"))
                continue
            add(spec, idx if spec.index == "input" else str(idx), item, (key, idx))
    return values, problems
