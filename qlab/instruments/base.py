"""Lifecycle shared by every instrument: open/close, context manager, identify, snapshot, status."""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from qlab.errors import InstrumentError
from qlab.instruments.cache import SettingsCache
from qlab.instruments.clock import Clock, WallClock
from qlab.instruments.limits import Limits
from qlab.instruments.settings import Setting
from qlab.settings_spec import parse_settings
from qlab.types import Identification

log = logging.getLogger(__name__)


class Instrument(ABC):
    """Base of all drivers. Subclasses implement ``_open``/``_close`` and the kind's abstract operations.

    Public setters validate against ``limits`` *before* calling the driver's private method, so no
    driver can send an out-of-range setpoint whichever caller asks for it.
    """

    kind: ClassVar[str] = ""
    model: ClassVar[str] = ""
    SETTINGS: ClassVar[dict[str, Setting]] = {}  # the kind's bound settings table (qlab.instruments.settings)
    capabilities: frozenset[str] = frozenset()  # optional settings this model has (detectors)

    def __init__(self, name: str, transport: Any = None, limits: Limits | None = None,
                 clock: Clock | None = None, options: dict[str, Any] | None = None):
        self.name = name
        self.transport = transport
        self.limits = limits or Limits(name)
        self.clock: Clock = clock or WallClock()
        self.options = dict(options or {})
        self._is_open = False
        self.cache = SettingsCache(name)  # last known value of every setting; views listen to it

    # -- lifecycle --------------------------------------------------------------------------------------
    def open(self) -> Instrument:
        """Open the link and the device. Raises what the driver raises; the link is then closed again, so a
        failed open (or a reconnect attempt) holds no port or session."""
        if not self._is_open:
            try:
                self._open()
            except BaseException:
                if self.transport is not None and hasattr(self.transport, "close"):
                    with contextlib.suppress(Exception):
                        self.transport.close()
                raise
            self._is_open = True
            log.info("%s: opened %s", self.name, self.model)
        return self

    def close(self) -> None:
        if self._is_open:
            try:
                self.safe_state()
            finally:
                try:
                    self._close()
                finally:
                    self._is_open = False
                    if self.transport is not None and hasattr(self.transport, "close"):
                        self.transport.close()

    def __enter__(self) -> Instrument:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._is_open

    def _require_open(self) -> None:
        if not self._is_open:
            raise InstrumentError(self.name, "instrument is not open")

    def _open(self) -> None:  # noqa: B027 - optional hook
        """Connect and check the device answers. Default: nothing to do."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release the device. Default: nothing to do."""

    # -- common operations ------------------------------------------------------------------------------
    @abstractmethod
    def identify(self) -> Identification:
        """Manufacturer, model, serial and firmware as the device reports them."""

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every readable setting with its unit, read from the device now (which also refreshes the cache):
        ``{"current_set": {"value": 0.1, "unit": "A"}, ...}``. Raises InstrumentError/InstrumentTimeout if a
        read fails."""
        return {entry: value(v, unit) for entry, (v, unit) in self.read_settings().items()}

    def status(self) -> dict[str, Any]:
        """Health summary; drivers extend it with device status bits."""
        return {"open": self._is_open, "model": self.model}

    def safe_state(self) -> None:  # noqa: B027 - lasers override
        """Put the instrument in a state that is safe to leave unattended (lasers: output off)."""

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Apply the ``settings`` block of instruments.yaml (keys of the kind's table, e.g. ``current_a``,
        ``delays_ps: {input: ps}``). Raises InstrumentError for an unknown key or a value of the wrong type
        (nothing is sent then) and LimitError for a value outside the limits."""
        values, problems = parse_settings(self.kind, settings, self.options.get("axes") and list(self.options["axes"]))
        if problems:
            raise InstrumentError(self.name, "; ".join(f"settings.{'.'.join(map(str, p))}: {m}" for p, m in problems))
        for sv in values:
            self.write_setting(sv.spec.name, sv.value, sv.index)

    # -- the settings table ---------------------------------------------------------------------------------
    def settings_table(self) -> list[Setting]:
        """The kind's settings this model has (capabilities permitting), in table order."""
        return [s for s in self.SETTINGS.values() if s.spec.capability is None or s.spec.capability in
                self.capabilities]

    def setting_indices(self, setting: Setting) -> list[Any]:
        """Inputs or axes an indexed setting ranges over ([None] for a plain one)."""
        if setting.spec.index == "input":
            return list(self.channels())  # type: ignore[attr-defined]
        if setting.spec.index == "axis":
            return list(self.axes())  # type: ignore[attr-defined]
        return [None]

    def _setting(self, name: str, writing: bool = False) -> Setting:
        s = self.SETTINGS.get(name)
        if s is None:
            raise InstrumentError(self.name, f"{self.kind} has no setting {name!r}; it has {sorted(self.SETTINGS)}")
        for cap in (s.spec.capability, s.spec.write_capability if writing else None):
            if cap is not None and cap not in self.capabilities:
                raise InstrumentError(self.name, f"{self.model} has no {cap} setting")
        if writing and not s.spec.writable:
            raise InstrumentError(self.name, f"{name} is read-only")
        return s

    def check_setting(self, name: str, v: Any, index: Any = None) -> tuple[Setting, Any, Any]:
        """Everything a write checks before anything is sent: open, capability, index, type, limits.
        Returns (setting, index, value coerced to the setting's type). Raises InstrumentError/LimitError."""
        self._require_open()
        s = self._setting(name, writing=True)
        index = self._check_index(s, index)
        spec = s.spec
        if spec.limit is not None:
            v = self.limits.check(spec.limit, v)
        elif spec.type_error(v) is not None:
            raise InstrumentError(self.name, f"{name}: {spec.type_error(v)}")
        return s, index, spec.type(v)

    def _check_index(self, s: Setting, index: Any) -> Any:
        if s.spec.index == "input":
            self._check_channel(index)  # type: ignore[attr-defined]
        elif s.spec.index == "axis":
            return self._axis(index)  # type: ignore[attr-defined]
        return index

    def write_setting(self, name: str, v: Any, index: Any = None) -> None:
        """Check and write one setting (``index``: input or axis of an indexed one); the cache records the
        written value. Raises InstrumentError (closed, no such setting or input/axis, wrong type) or
        LimitError (outside the configured limits), sending nothing in either case."""
        s, index, v = self.check_setting(name, v, index)
        s.write(self, v, index)
        self.record_set(s, v, index)

    def record_set(self, s: Setting, v: Any, index: Any = None) -> None:
        """Put a value just written successfully into the cache (no device I/O: the next read confirms it)."""
        self.cache.update({s.spec.entry(index): (v, s.spec.unit)}, "set")

    def read_settings(self, names: list[str] | None = None) -> dict[str, tuple[Any, str]]:
        """Read every readable setting (or those in ``names``) from the device; update the cache and return
        ``{entry: (value, unit)}``. Raises what the driver's getters raise."""
        out: dict[str, tuple[Any, str]] = {}
        for s in self.settings_table():
            if not s.spec.readable or (names is not None and s.name not in names):
                continue
            if s.spec.index == "map":
                for label, v in s.read(self).items():
                    out[s.spec.entry(label)] = (v, s.spec.unit)
                continue
            for index in self.setting_indices(s):
                out[s.spec.entry(index)] = (s.read(self, index), s.spec.unit)
        self.cache.update(out, "read")
        return out


def value(v: Any, unit: str) -> dict[str, Any]:
    """One snapshot entry."""
    return {"value": v, "unit": unit}
