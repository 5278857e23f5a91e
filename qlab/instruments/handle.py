"""One worker thread owns each open instrument; every caller goes through its thread-safe handle."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from qlab.errors import InstrumentError, InstrumentTimeout
from qlab.instruments.cache import SettingsCache

log = logging.getLogger(__name__)

FaultCallback = Callable[[str, BaseException], None]
_STOP = object()
_WAIT_SLICE_S = 0.05  # how often a waiting caller looks whether the watchdog declared the worker hung


class InstrumentHandle:
    """Serializes all calls to one instrument on its own worker thread.

    ``handle.call("move_absolute", 45.0)`` or ``handle.move_absolute(45.0)`` block until done;
    ``handle.submit(...)`` returns a Future (the GUI uses it and never waits). A query and its response
    can never interleave with another caller's, because only the worker talks to the device.
    Communication failures are passed to ``on_fault`` (the lab switches lasers off and reports).
    When the watchdog finds the worker stuck in a call (``mark_hung``), every caller waiting on this
    instrument gets that fault at once instead of waiting for the stuck call.
    """

    def __init__(self, instrument: Any, on_fault: FaultCallback | None = None):
        self.instrument = instrument
        self.name: str = instrument.name
        self.kind: str = instrument.kind
        self._on_fault = on_fault
        self._queue: queue.Queue = queue.Queue()
        self.faulted: BaseException | None = None
        self.hung: BaseException | None = None  # set by the watchdog while the worker is stuck in a call
        self.current_call: str | None = None
        self._busy_since: float | None = None
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
            self.current_call = getattr(fn, "__name__", repr(fn))
            self._busy_since = time.monotonic()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                # Report a link failure once: later failures (e.g. the queued off command of the lasers-off
                # that this very fault triggers) would otherwise feed back into the handler.
                if isinstance(exc, InstrumentTimeout | OSError) and self._on_fault is not None \
                        and self.faulted is None:
                    self.faulted = exc
                    try:
                        self._on_fault(self.name, exc)
                    except Exception:  # noqa: BLE001 - a failing fault handler must not kill the worker
                        log.exception("%s: fault handler failed", self.name)
                fut.set_exception(exc)
            else:
                self.hung = None  # a call succeeded: the device answers again
                fut.set_result(result)
            finally:
                self._busy_since = None
                self.current_call = None

    def _resolve(self, method: str | Callable) -> Callable:
        """A method name of the instrument, or a callable taking the instrument first."""
        if isinstance(method, str):
            return getattr(self.instrument, method)
        fn = lambda *a, **k: method(self.instrument, *a, **k)  # noqa: E731
        fn.__name__ = getattr(method, "__name__", "call")
        return fn

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
        """Run ``method`` on the worker and wait for it. Raises what the call raises, TimeoutError after
        ``timeout`` s, or the watchdog's fault if the worker is (or becomes) stuck in an earlier call."""
        if threading.current_thread() is self._thread:  # re-entrant use from inside a call
            return self._resolve(method)(*args, **kwargs)
        return self.wait(self.submit(method, *args, **kwargs), timeout)

    def wait(self, fut: Future, timeout: float | None = None) -> Any:
        """The result of a future ``submit`` returned, waiting as ``call`` does (TimeoutError after ``timeout``
        s; the watchdog's fault at once if the worker is declared hung)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _WAIT_SLICE_S if deadline is None else min(_WAIT_SLICE_S, max(0.0, deadline - time.monotonic()))
            try:
                return fut.result(wait)
            except FutureTimeout:
                if self.hung is not None:
                    fut.cancel()  # a no-op if already running: its result is then dropped
                    raise self.hung from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    def mark_hung(self, fault: BaseException) -> None:
        """The watchdog found the worker stuck: fail the waiting callers with ``fault`` (until the stuck
        call returns)."""
        self.faulted = fault
        if self._busy_since is not None or not self._queue.empty():
            self.hung = fault

    def busy_for_s(self) -> float:
        """How long the worker has been in its current call (0 when idle), in s."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

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
