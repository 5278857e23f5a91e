"""The last known value of every setting of one instrument, with when and how it was learned.

Every write and every read-back through the instrument's settings table lands here; listeners hear about
values that changed, so every view (GUI panel, snapshot, script) shows what the instrument actually holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedValue:
    """A setting's value in ``unit``, read or written at ``time_s`` (Unix time, s)."""

    value: Any
    unit: str
    time_s: float
    source: Literal["set", "read"]


# listener(instrument name, {entry: CachedValue}) — called on the thread that read or wrote the value
# (an instrument worker): it must not block; GUI listeners forward through a Qt signal.
CacheListener = Callable[[str, dict[str, CachedValue]], None]


class SettingsCache:
    """Thread-safe map of snapshot entry (e.g. ``delay_ch2``) -> CachedValue for one instrument."""

    def __init__(self, instrument: str):
        self.instrument = instrument
        self._values: dict[str, CachedValue] = {}
        self._listeners: list[CacheListener] = []
        self._lock = threading.Lock()

    def update(self, values: dict[str, tuple[Any, str]], source: Literal["set", "read"]) -> dict[str, CachedValue]:
        """Record ``{entry: (value, unit)}``; notify listeners of those whose value changed (or is new).

        Returns the changed entries. A failing listener is logged and never reaches the caller: an
        instrument call must not fail because a view did.
        """
        now = time.time()
        changed: dict[str, CachedValue] = {}
        with self._lock:
            for entry, (v, unit) in values.items():
                old = self._values.get(entry)
                new = CachedValue(v, unit, now, source)
                self._values[entry] = new
                if old is None or old.value != v:
                    changed[entry] = new
            listeners = list(self._listeners)
        if changed:
            for listener in listeners:
                try:
                    listener(self.instrument, changed)
                except Exception:  # noqa: BLE001 - see docstring
                    log.exception("%s: settings listener failed", self.instrument)
        return changed

    def get(self, entry: str) -> CachedValue | None:
        with self._lock:
            return self._values.get(entry)

    def values(self) -> dict[str, CachedValue]:
        """A copy of every cached entry."""
        with self._lock:
            return dict(self._values)

    def add_listener(self, listener: CacheListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: CacheListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
