"""One worker thread owns each open instrument; every caller goes through its thread-safe handle."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from qlab.errors import InstrumentError, InstrumentTimeout
from qlab.instruments.cache import SettingsCache

log = logging.getLogger(__name__)

FaultCallback = Callable[[str, BaseException], None]
_STOP = object()


class InstrumentHandle:
    """Serializes all calls to one instrument on its own worker thread.

    ``handle.call("move_absolute", 45.0)`` or ``handle.move_absolute(45.0)`` block until done;
    ``handle.submit(...)`` returns a Future (the GUI uses it and never waits). A query and its response
    can never interleave with another caller's, because only the worker talks to the device.
    Communication failures are passed to ``on_fault`` (the lab switches lasers off and reports).
    """

    def __init__(self, instrument: Any, on_fault: FaultCallback | None = None):
        self.instrument = instrument
        self.name: str = instrument.name
        self.kind: str = instrument.kind
        self._on_fault = on_fault
        self._queue: queue.Queue = queue.Queue()
        self.faulted: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"instrument-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fut, fn, args, kwargs = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                if isinstance(exc, InstrumentTimeout | OSError) and self._on_fault is not None:
                    self.faulted = exc
                    try:
                        self._on_fault(self.name, exc)
                    except Exception:  # noqa: BLE001 - a failing fault handler must not kill the worker
                        log.exception("%s: fault handler failed", self.name)
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    def _resolve(self, method: str | Callable) -> Callable:
        """A method name of the instrument, or a callable taking the instrument first."""
        if isinstance(method, str):
            return getattr(self.instrument, method)
        return lambda *a, **k: method(self.instrument, *a, **k)

    def submit(self, method: str | Callable, *args: Any, **kwargs: Any) -> Future:
        """Queue a call; ``method`` is a method name of the instrument or a callable taking it."""
        fn = self._resolve(method)
        fut: Future = Future()
        if not self._thread.is_alive():
            fut.set_exception(InstrumentError(self.name, "instrument worker has stopped"))
            return fut
        self._queue.put((fut, fn, args, kwargs))
        return fut

    def call(self, method: str | Callable, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        if threading.current_thread() is self._thread:  # re-entrant use from inside a call
            return self._resolve(method)(*args, **kwargs)
        return self.submit(method, *args, **kwargs).result(timeout)

    @property
    def cache(self) -> SettingsCache:
        """The instrument's settings cache: last known value of each setting, updated on every set and
        every read (snapshot, poll). Reading it never touches the device; listeners hear about changes."""
        return self.instrument.cache

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self.instrument, attr)
        if not callable(target):
            return target
        return lambda *a, **k: self.call(attr, *a, **k)

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
