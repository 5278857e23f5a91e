"""The safety envelope: setpoint limits from instruments.yaml, checked before anything is sent."""

from __future__ import annotations

import math
from collections.abc import Mapping

from qlab.config.schema import Limit
from qlab.errors import LimitError
from qlab.settings_spec import LIMIT_UNITS

UNITS = LIMIT_UNITS  # unit of each limit quantity, from the kinds' settings tables


class Limits:
    """Per-instrument limits. ``check`` raises LimitError (and the caller sends nothing)."""

    def __init__(self, instrument: str, limits: Mapping[str, Limit] | None = None):
        self.instrument = instrument
        self._limits = dict(limits or {})

    def check(self, quantity: str, value: float) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise LimitError(self.instrument, quantity, value, None, None, UNITS.get(quantity, ""))
        lim = self._limits.get(quantity)
        if lim is not None and ((lim.min is not None and value < lim.min)
                                or (lim.max is not None and value > lim.max)):
            raise LimitError(self.instrument, quantity, value, lim.min, lim.max, UNITS.get(quantity, ""))
        return float(value)

    def bounds(self, quantity: str) -> tuple[float | None, float | None]:
        lim = self._limits.get(quantity)
        return (None, None) if lim is None else (lim.min, lim.max)

    def as_dict(self) -> dict[str, dict[str, float | None | str]]:
        return {q: {"min": lim.min, "max": lim.max, "unit": UNITS.get(q, "")} for q, lim in self._limits.items()}
